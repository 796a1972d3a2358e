package storage

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/storageapi"
)

func TestPut(t *testing.T) {
	data := randomShard(1, 1000)
	id := storageapi.ShardID(data)
	other := randomShard(2, 1000) // same size, other content
	big := randomShard(3, 5000)

	tests := []struct {
		name     string
		capacity int64
		prepare  func(ts *testServer) // optional, before the request
		request  func(ts *testServer) *http.Request
		wantCode int
		wantMsg  string // part of the error message
		reason   string // counted in orders_rejected_total
		stored   bool   // the shard is held afterwards
	}{
		{
			name: "ok",
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, data)
			},
			wantCode: http.StatusCreated, stored: true,
		},
		{
			name:    "idempotent re-put",
			prepare: func(ts *testServer) { ts.putShard(t, data) },
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, data)
			},
			wantCode: http.StatusOK, stored: true,
		},
		{
			name: "wrong hash",
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, other)
			},
			wantCode: http.StatusBadRequest, wantMsg: "do not hash to the shard ID",
		},
		{
			name: "no order",
			request: func(ts *testServer) *http.Request {
				return httptest.NewRequest(http.MethodPut, "/shards/"+id, bytes.NewReader(data))
			},
			wantCode: http.StatusForbidden, wantMsg: storageapi.OrderHeader, reason: reasonMissing,
		},
		{
			name: "malformed order",
			request: func(ts *testServer) *http.Request {
				req := putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, data)
				req.Header.Set(storageapi.OrderHeader, "not an envelope!")
				return req
			},
			wantCode: http.StatusBadRequest, reason: reasonMalformed,
		},
		{
			name: "signed by a non-origin key",
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.other, ts.writeOrder(id, 1000), id, data)
			},
			wantCode: http.StatusForbidden, wantMsg: "only the origin", reason: reasonSigner,
		},
		{
			name: "read order instead of write order",
			request: func(ts *testServer) *http.Request {
				req := putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, data)
				req.Header.Set(storageapi.OrderHeader, encodeOrder(t, ts.keys.origin, storageapi.TypeReadOrder, ts.readOrder(id, 0, 1000, "s")))
				return req
			},
			wantCode: http.StatusForbidden, reason: reasonSignature,
		},
		{
			name: "expired",
			request: func(ts *testServer) *http.Request {
				o := ts.writeOrder(id, 1000)
				o.Expires = testNow.Add(-time.Second)
				return putRequest(t, ts.keys.origin, o, id, data)
			},
			wantCode: http.StatusForbidden, wantMsg: "expired", reason: reasonExpired,
		},
		{
			name: "valid too long",
			request: func(ts *testServer) *http.Request {
				o := ts.writeOrder(id, 1000)
				o.Expires = testNow.Add(storageapi.MaxOrderLifetime + time.Minute)
				return putRequest(t, ts.keys.origin, o, id, data)
			},
			wantCode: http.StatusForbidden, reason: reasonExpired,
		},
		{
			name: "order for another peer",
			request: func(ts *testServer) *http.Request {
				o := ts.writeOrder(id, 1000)
				o.Peer = ts.keys.other.ID.String()
				return putRequest(t, ts.keys.origin, o, id, data)
			},
			wantCode: http.StatusForbidden, wantMsg: "is for peer", reason: reasonPeer,
		},
		{
			name: "order for another shard",
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.origin, ts.writeOrder(storageapi.ShardID(other), 1000), id, data)
			},
			wantCode: http.StatusForbidden, reason: reasonShard,
		},
		{
			name: "size differs from Content-Length",
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.origin, ts.writeOrder(id, 999), id, data)
			},
			wantCode: http.StatusBadRequest, wantMsg: "Content-Length", reason: reasonSize,
		},
		{
			name: "no Content-Length",
			request: func(ts *testServer) *http.Request {
				req := putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, data)
				req.ContentLength = -1
				return req
			},
			wantCode: http.StatusLengthRequired,
		},
		{
			name: "body longer than the order",
			request: func(ts *testServer) *http.Request {
				req := putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, append(bytes.Clone(data), 0))
				req.ContentLength = 1000
				return req
			},
			wantCode: http.StatusRequestEntityTooLarge,
		},
		{
			name: "body shorter than the order",
			request: func(ts *testServer) *http.Request {
				req := putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, data[:900])
				req.ContentLength = 1000
				return req
			},
			wantCode: http.StatusBadRequest, wantMsg: "body has 900 bytes",
		},
		{
			name:     "over capacity",
			capacity: 4096,
			request: func(ts *testServer) *http.Request {
				bid := storageapi.ShardID(big)
				return putRequest(t, ts.keys.origin, ts.writeOrder(bid, 5000), bid, big)
			},
			wantCode: http.StatusInsufficientStorage, wantMsg: "only 4096 of this peer's 4096 bytes are free",
		},
		{
			name:     "re-put of a held shard when full",
			capacity: 1000,
			prepare:  func(ts *testServer) { ts.putShard(t, data) },
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.origin, ts.writeOrder(id, 1000), id, data)
			},
			wantCode: http.StatusOK, stored: true,
		},
		{
			name: "not a shard ID",
			request: func(ts *testServer) *http.Request {
				return putRequest(t, ts.keys.origin, ts.writeOrder("nope", 1000), "nope", data)
			},
			wantCode: http.StatusBadRequest,
		},
		{
			name: "shard ID not canonical",
			request: func(ts *testServer) *http.Request {
				up := "B" + strings.ToUpper(id[1:]) // base32upper of the same CID
				return putRequest(t, ts.keys.origin, ts.writeOrder(up, 1000), up, data)
			},
			wantCode: http.StatusBadRequest, wantMsg: "canonical",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			capacity := tc.capacity
			if capacity == 0 {
				capacity = 1 << 20
			}
			ts := newTestServer(t, capacity)
			if tc.prepare != nil {
				tc.prepare(ts)
			}
			rec := ts.do(tc.request(ts))
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", rec.Code, rec.Body, tc.wantCode)
			}
			if rec.Code >= 400 {
				if msg := errorMessage(t, rec); !strings.Contains(msg, tc.wantMsg) {
					t.Fatalf("error %q, want it to mention %q", msg, tc.wantMsg)
				}
			}
			if tc.reason != "" && ts.rejected(tc.reason) != 1 {
				t.Fatalf("orders_rejected_total{reason=%q} = %v, want 1", tc.reason, ts.rejected(tc.reason))
			}
			_, held := ts.store.size(id)
			if held != tc.stored {
				t.Fatalf("shard held = %v, want %v", held, tc.stored)
			}
			if _, err := os.Stat(ts.store.path(id)); (err == nil) != tc.stored {
				t.Fatalf("shard file exists = %v, want %v", err == nil, tc.stored)
			}
			if files := ts.tmpFiles(t); len(files) != 0 {
				t.Fatalf("temp files left: %v", files)
			}
			_, used, free, n := ts.store.stats()
			if wantUsed := map[bool]int64{true: 1000}[tc.stored]; used != wantUsed || free != capacity-used || n != int(wantUsed/1000) {
				t.Fatalf("used %d free %d shards %d; want used %d", used, free, n, wantUsed)
			}
		})
	}
}

func TestConcurrentPutsRespectCapacity(t *testing.T) {
	ts := newTestServer(t, 100)
	url := ts.serve(t)
	c := testClient(ts.keys.origin)
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		ok, full, other int
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := randomShard(uint64(100+i), 30)
			err := c.Put(context.Background(), ts.ID(), url, storageapi.ShardID(data), data)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, storageapi.ErrInsufficientStorage):
				full++
			default:
				other++
				t.Errorf("put: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 3 || full != 5 {
		t.Fatalf("%d puts stored, %d refused for space; want 3 and 5", ok, full)
	}
	st, err := c.Status(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if st.Used != 90 || st.Free != 10 || st.Shards != 3 || st.Capacity != 100 || st.PeerID != ts.ID().String() {
		t.Fatalf("status %+v", st)
	}
}

func TestGet(t *testing.T) {
	data := randomShard(7, 1000)
	id := storageapi.ShardID(data)
	missing := storageapi.ShardID([]byte("not held"))
	tests := []struct {
		name     string
		prepare  func(ts *testServer)
		request  func(ts *testServer) *http.Request
		wantCode int
		want     []byte // the body of a 2xx answer
		wantCR   string // Content-Range
		reason   string
	}{
		{
			name: "range",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 100, 100, "a"), id, "bytes=100-199")
			},
			wantCode: http.StatusPartialContent, want: data[100:200], wantCR: "bytes 100-199/1000",
		},
		{
			name: "last byte",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 999, 1, "a"), id, "bytes=999-999")
			},
			wantCode: http.StatusPartialContent, want: data[999:], wantCR: "bytes 999-999/1000",
		},
		{
			name: "whole shard without Range",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 1000, "a"), id, "")
			},
			wantCode: http.StatusOK, want: data,
		},
		{
			name: "any reader key",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.other, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-9")
			},
			wantCode: http.StatusPartialContent, want: data[:10], wantCR: "bytes 0-9/1000",
		},
		{
			name: "same serial from another reader",
			prepare: func(ts *testServer) {
				ts.do(getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-9"))
			},
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.other, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-9")
			},
			wantCode: http.StatusPartialContent, want: data[:10], wantCR: "bytes 0-9/1000",
		},
		{
			name: "replayed serial",
			prepare: func(ts *testServer) {
				ts.do(getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-9"))
			},
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 20, 10, "a"), id, "bytes=20-29")
			},
			wantCode: http.StatusConflict, reason: reasonReplay,
		},
		{
			name: "partial order without Range",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 999, "a"), id, "")
			},
			wantCode: http.StatusBadRequest, reason: reasonRange,
		},
		{
			name: "range differs from the order",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-99")
			},
			wantCode: http.StatusBadRequest, reason: reasonRange,
		},
		{
			name: "several ranges",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-9,20-29")
			},
			wantCode: http.StatusBadRequest,
		},
		{
			name: "open range",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 990, 10, "a"), id, "bytes=990-")
			},
			wantCode: http.StatusBadRequest,
		},
		{
			name: "out of bounds",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 990, 20, "a"), id, "bytes=990-1009")
			},
			wantCode: http.StatusRequestedRangeNotSatisfiable, wantCR: "bytes */1000",
		},
		{
			name: "over 16 MiB",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 0, storageapi.MaxReadLength+1, "a"), id, "bytes=0-16777216")
			},
			wantCode: http.StatusBadRequest, reason: reasonRange,
		},
		{
			name: "expired",
			request: func(ts *testServer) *http.Request {
				o := ts.readOrder(id, 0, 10, "a")
				o.Expires = testNow
				return getRequest(t, ts.keys.reader, o, id, "bytes=0-9")
			},
			wantCode: http.StatusForbidden, reason: reasonExpired,
		},
		{
			name: "order for another peer",
			request: func(ts *testServer) *http.Request {
				o := ts.readOrder(id, 0, 10, "a")
				o.Peer = ts.keys.reader.ID.String()
				return getRequest(t, ts.keys.reader, o, id, "bytes=0-9")
			},
			wantCode: http.StatusForbidden, reason: reasonPeer,
		},
		{
			name: "no serial",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 10, ""), id, "bytes=0-9")
			},
			wantCode: http.StatusBadRequest, reason: reasonMalformed,
		},
		{
			name: "write order instead of read order",
			request: func(ts *testServer) *http.Request {
				req := getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-9")
				req.Header.Set(storageapi.OrderHeader, encodeOrder(t, ts.keys.origin, storageapi.TypeWriteOrder, ts.writeOrder(id, 1000)))
				return req
			},
			wantCode: http.StatusForbidden, reason: reasonSignature,
		},
		{
			name: "no order",
			request: func(ts *testServer) *http.Request {
				req := httptest.NewRequest(http.MethodGet, "/shards/"+id, nil)
				req.Header.Set("Range", "bytes=0-9")
				return req
			},
			wantCode: http.StatusForbidden, reason: reasonMissing,
		},
		{
			name: "HEAD",
			request: func(ts *testServer) *http.Request {
				req := getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 10, "a"), id, "bytes=0-9")
				req.Method = http.MethodHead
				return req
			},
			wantCode: http.StatusMethodNotAllowed,
		},
		{
			name: "shard not held",
			request: func(ts *testServer) *http.Request {
				return getRequest(t, ts.keys.reader, ts.readOrder(missing, 0, 10, "a"), missing, "bytes=0-9")
			},
			wantCode: http.StatusNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, 1<<20)
			ts.putShard(t, data)
			if tc.prepare != nil {
				tc.prepare(ts)
			}
			before, bytesBefore := servedCount(t, ts), counterValue(ts.metrics.readBytes)
			rec := ts.do(tc.request(ts))
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", rec.Code, rec.Body, tc.wantCode)
			}
			if got := rec.Header().Get("Content-Range"); got != tc.wantCR {
				t.Fatalf("Content-Range %q, want %q", got, tc.wantCR)
			}
			after := servedCount(t, ts)
			if rec.Code >= 300 {
				errorMessage(t, rec)
				if after != before {
					t.Fatalf("a refused read was recorded as served")
				}
				if tc.reason != "" && ts.rejected(tc.reason) != 1 {
					t.Fatalf("orders_rejected_total{reason=%q} = %v, want 1", tc.reason, ts.rejected(tc.reason))
				}
				return
			}
			if !bytes.Equal(rec.Body.Bytes(), tc.want) {
				t.Fatalf("served %d bytes, not the %d asked for", rec.Body.Len(), len(tc.want))
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/octet-stream" {
				t.Fatalf("Content-Type %q", ct)
			}
			if after != before+1 {
				t.Fatalf("served reads %d -> %d, want one more", before, after)
			}
			if got := counterValue(ts.metrics.readBytes) - bytesBefore; got != float64(len(tc.want)) {
				t.Fatalf("read_bytes_total = %v, want %d", got, len(tc.want))
			}
		})
	}
}

// servedCount counts the read orders ts recorded as served.
func servedCount(t testing.TB, ts *testServer) int {
	t.Helper()
	var n int
	if err := ts.db.QueryRow(`SELECT count(*) FROM served_reads`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestServedReadKeepsTheOrder(t *testing.T) {
	ts := newTestServer(t, 1<<20)
	data := randomShard(8, 100)
	id := ts.putShard(t, data)
	req := getRequest(t, ts.keys.reader, ts.readOrder(id, 10, 5, "serial-1"), id, "bytes=10-14")
	if rec := ts.do(req); rec.Code != http.StatusPartialContent {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	var reader, serial, shard, envelope string
	var off, length, servedAt int64
	err := ts.db.QueryRow(`SELECT reader, serial, shard, "offset", length, served_at, envelope FROM served_reads`).
		Scan(&reader, &serial, &shard, &off, &length, &servedAt, &envelope)
	if err != nil {
		t.Fatal(err)
	}
	if reader != ts.keys.reader.ID.String() || serial != "serial-1" || shard != id || off != 10 || length != 5 ||
		servedAt != testNow.UnixNano() || envelope != req.Header.Get(storageapi.OrderHeader) {
		t.Fatalf("recorded %s %s %s %d %d %d", reader, serial, shard, off, length, servedAt)
	}
	// The kept envelope still proves the order: it opens with the reader's
	// signature.
	var o storageapi.ReadOrder
	if signer, err := openOrder(envelope, storageapi.TypeReadOrder, &o); err != nil || signer != ts.keys.reader.ID || o.Length != 5 {
		t.Fatalf("kept order does not open: %v, %v, %+v", signer, err, o)
	}
}
