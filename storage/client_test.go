package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/storageapi"
)

func TestClientRoundTrip(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t, 1<<20)
	url := ts.serve(t)
	origin, reader := testClient(ts.keys.origin), testClient(ts.keys.reader)
	data := randomShard(40, 70_000)
	id := storageapi.ShardID(data)

	if err := reader.Put(ctx, ts.ID(), url, id, data); !errors.Is(err, storageapi.ErrForbidden) {
		t.Fatalf("put signed by a reader: err = %v, want 403", err)
	}
	if err := origin.Put(ctx, ts.ID(), url, id, data[1:]); err == nil {
		t.Fatal("put of data that is not the shard succeeded")
	}
	for range 2 { // the second put finds the shard held
		if err := origin.Put(ctx, ts.ID(), url, id, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := origin.Put(ctx, ts.keys.other.ID, url, id, data); !errors.Is(err, storageapi.ErrForbidden) {
		t.Fatalf("put ordered for another peer: err = %v, want 403", err)
	}
	for _, r := range [][2]int64{{0, 1}, {0, 70_000}, {65_536, 4464}, {12_345, 1000}} {
		got, err := reader.GetRange(ctx, ts.ID(), url, id, r[0], r[1])
		if err != nil {
			t.Fatalf("GetRange %v: %v", r, err)
		}
		if string(got) != string(data[r[0]:r[0]+r[1]]) {
			t.Fatalf("GetRange %v: wrong bytes", r)
		}
	}
	if _, err := reader.GetRange(ctx, ts.ID(), url, id, 69_999, 2); !errors.Is(err, storageapi.ErrRangeNotSatisfiable) {
		t.Fatalf("GetRange past the end: err = %v, want 416", err)
	}
	if _, err := reader.GetRange(ctx, ts.ID(), url, id, 0, storageapi.MaxReadLength+1); err == nil {
		t.Fatal("GetRange over MaxReadLength accepted")
	}
	held, err := reader.List(ctx, url)
	if err != nil || len(held) != 1 || held[0] != (storageapi.ShardInfo{ID: id, Size: int64(len(data))}) {
		t.Fatalf("List: %+v, %v; want the one shard put", held, err)
	}
	if _, err := reader.List(ctx, "ftp://"+strings.TrimPrefix(url, "http://")); err == nil {
		t.Fatal("List of a peer address that is not http(s) accepted")
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get(url + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
}

func TestGetRangeChecksLength(t *testing.T) {
	keys := newTestKeys(t)
	id := storageapi.ShardID([]byte("shard"))
	tests := []struct {
		name string
		body string
		code int
		ok   bool
	}{
		{name: "exact", body: "0123456789", code: http.StatusPartialContent, ok: true},
		{name: "short", body: "012345678", code: http.StatusPartialContent},
		{name: "long", body: "0123456789A", code: http.StatusPartialContent},
		{name: "empty", body: "", code: http.StatusPartialContent},
		{name: "not a range answer", body: "0123456789", code: http.StatusCreated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get(storageapi.OrderHeader) == "" || r.Header.Get("Range") != "bytes=5-14" {
					t.Errorf("request without order or with Range %q", r.Header.Get("Range"))
				}
				w.WriteHeader(tc.code)
				fmt.Fprint(w, tc.body)
			}))
			defer srv.Close()
			got, err := testClient(keys.reader).GetRange(context.Background(), keys.peer.ID, srv.URL, id, 5, 10)
			if tc.ok != (err == nil) {
				t.Fatalf("GetRange = %q, %v; want ok = %v", got, err, tc.ok)
			}
		})
	}
}

func TestPeerError(t *testing.T) {
	tests := []struct {
		status int
		is     error
	}{
		{http.StatusInsufficientStorage, storageapi.ErrInsufficientStorage},
		{http.StatusNotFound, storageapi.ErrNotFound},
		{http.StatusForbidden, storageapi.ErrForbidden},
		{http.StatusConflict, storageapi.ErrConflict},
		{http.StatusRequestedRangeNotSatisfiable, storageapi.ErrRangeNotSatisfiable},
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				httpkit.WriteError(w, errorf(tc.is, "the reason"))
			}))
			defer srv.Close()
			keys := newTestKeys(t)
			err := testClient(keys.origin).Delete(context.Background(), keys.peer.ID, srv.URL, storageapi.ShardID(nil))
			var pe *storageapi.PeerError
			if !errors.As(err, &pe) || pe.Status != tc.status || pe.Message != "the reason" {
				t.Fatalf("err = %#v, want a PeerError %d", err, tc.status)
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("%v does not match %v", err, tc.is)
			}
			if errors.Is(err, storageapi.ErrBadRequest) {
				t.Fatalf("%v matches ErrBadRequest", err)
			}
			if !strings.Contains(err.Error(), "the reason") {
				t.Fatalf("error %q lacks the peer's message", err)
			}
		})
	}
	// An answer that is not JSON keeps its text.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream hiccup", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := storageapi.NewClient(newTestKeys(t).reader, nil).Status(context.Background(), srv.URL)
	var pe *storageapi.PeerError
	if !errors.As(err, &pe) || pe.Status != http.StatusBadGateway || pe.Message != "upstream hiccup" {
		t.Fatalf("err = %v", err)
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last int64
		ok          bool
	}{
		{"bytes=0-0", 0, 0, true},
		{"bytes=10-19", 10, 19, true},
		{"bytes=0-9223372036854775806", 0, 9223372036854775806, true},
		{"bytes=5-4", 0, 0, false},
		{"bytes=-5", 0, 0, false},
		{"bytes=5-", 0, 0, false},
		{"bytes=0-1,3-4", 0, 0, false},
		{"bytes= 0-1", 0, 0, false},
		{"bytes=+0-1", 0, 0, false},
		{"bytes=0--1", 0, 0, false},
		{"bytes=0-99999999999999999999", 0, 0, false},
		{"items=0-1", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range tests {
		first, last, err := parseRange(tc.in)
		if (err == nil) != tc.ok || first != tc.first || last != tc.last {
			t.Errorf("parseRange(%q) = %d, %d, %v", tc.in, first, last, err)
		}
	}
}
