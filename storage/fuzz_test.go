package storage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
)

// FuzzReadOrder feeds arbitrary order headers, order bodies (signed by a
// reader, so the checks past the signature are reached) and Range headers
// to GET /shards/{id}. Whatever the input: no panic, no server error, and
// bytes are served only on a valid, unspent order for exactly its range,
// and they are the shard's.
func FuzzReadOrder(f *testing.F) {
	ts := openTestServer(f, f.TempDir(), 1<<20)
	shard := randomShard(50, 300)
	id := ts.putShard(f, shard)
	self := ts.ID().String()
	exp := testNow.Add(time.Minute).Format(time.RFC3339)
	body := func(peer, shard string, off, length int64, expires, serial string) string {
		b, _ := json.Marshal(map[string]any{"peer": peer, "shard": shard, "offset": off, "length": length,
			"expires": expires, "serial": serial})
		return string(b)
	}
	rng := func(first, last int64) string { return fmt.Sprintf("bytes=%d-%d", first, last) }
	for i, s := range []struct{ body, rng string }{
		{body(self, id, 0, 300, exp, "a"), ""},
		{body(self, id, 0, 300, exp, "b"), rng(0, 299)},
		{body(self, id, 10, 20, exp, "c"), rng(10, 29)},
		{body(self, id, 10, 20, exp, "d"), rng(10, 30)},
		{body(self, id, 290, 20, exp, "e"), rng(290, 309)},
		{body(self, id, 0, 10, exp, "f"), "bytes=0-9,10-19"},
		{body(self, id, 0, 10, exp, "g"), "bytes=-10"},
		{body(self, id, -1, 10, exp, "h"), rng(-1, 8)},
		{body(self, id, 9223372036854775807, 1, exp, "i"), "bytes=9223372036854775807-9223372036854775807"},
		{body(self, id, 1, 9223372036854775807, exp, "j"), "bytes=1-9223372036854775807"},
		{body(self, id, 0, 0, exp, "k"), "bytes=0--1"},
		{body(self, id, 0, 10, testNow.Format(time.RFC3339), "l"), rng(0, 9)},
		{body(self, id, 0, 10, testNow.Add(48*time.Hour).Format(time.RFC3339), "m"), rng(0, 9)},
		{body(ts.keys.reader.ID.String(), id, 0, 10, exp, "n"), rng(0, 9)},
		{body(self, storageapi.ShardID(nil), 0, 10, exp, "o"), rng(0, 9)},
		{body(self, id, 0, 10, exp, ""), rng(0, 9)},
		{`{"peer":"` + self + `","shard":"` + id + `","offset":0,"length":10,"expires":"` + exp + `","serial":"p","x":1}`, rng(0, 9)},
		{`{"offset":"0"}`, rng(0, 9)},
		{`null`, ""},
		{`[]`, "bytes=0-0"},
	} {
		f.Add("", s.body, s.rng)
		if i < 3 { // the same orders, already signed and encoded
			f.Add(encodeOrder(f, ts.keys.other, storageapi.TypeReadOrder, json.RawMessage(s.body)), "", s.rng)
		}
	}
	f.Add("e30", "", rng(0, 9))
	f.Add("!!", "", "")
	f.Add(encodeOrder(f, ts.keys.origin, storageapi.TypeWriteOrder, ts.writeOrder(id, 300)), "", rng(0, 299))

	served := map[string]bool{} // reader/serial
	f.Fuzz(func(t *testing.T, header, orderBody, rangeHeader string) {
		if orderBody != "" {
			if h, ok := signRaw(ts.keys.reader, storageapi.TypeReadOrder, orderBody); ok {
				header = h
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/shards/"+id, nil)
		if header != "" {
			req.Header.Set(storageapi.OrderHeader, header)
		}
		if rangeHeader != "" {
			req.Header.Set("Range", rangeHeader)
		}
		rec := ts.do(req)
		if rec.Code >= 500 {
			t.Fatalf("server error %d: %s", rec.Code, rec.Body)
		}
		if rec.Code >= 300 {
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("refusal %d answered with %q", rec.Code, ct)
			}
			return
		}
		// Served: the order must be valid and unspent, for this range.
		var o storageapi.ReadOrder
		signer, err := openOrder(header, storageapi.TypeReadOrder, &o)
		if err != nil {
			t.Fatalf("served on an order that does not open: %v", err)
		}
		if err := ts.checkOrder(order{signer, o.Peer, o.Shard, o.Expires}, id, false); err != nil {
			t.Fatalf("served on an invalid order: %v", err)
		}
		if err := checkReadOrder(&o); err != nil {
			t.Fatalf("served on an invalid order: %v", err)
		}
		key := signer.String() + "/" + o.Serial
		if served[key] {
			t.Fatalf("order %s served twice", key)
		}
		served[key] = true
		if rangeHeader == "" && (o.Offset != 0 || o.Length != int64(len(shard))) {
			t.Fatalf("partial order %d+%d served without a Range header", o.Offset, o.Length)
		}
		if rangeHeader != "" && rangeHeader != fmt.Sprintf("bytes=%d-%d", o.Offset, o.Offset+o.Length-1) {
			t.Fatalf("Range %q served for order %d+%d", rangeHeader, o.Offset, o.Length)
		}
		if o.Offset+o.Length > int64(len(shard)) || !bytes.Equal(rec.Body.Bytes(), shard[o.Offset:o.Offset+o.Length]) {
			t.Fatalf("served %d bytes that are not bytes %d+%d of the shard", rec.Body.Len(), o.Offset, o.Length)
		}
		if cl := rec.Header().Get("Content-Length"); cl != strconv.FormatInt(o.Length, 10) {
			t.Fatalf("Content-Length %q for %d bytes", cl, o.Length)
		}
	})
}

// signRaw signs body exactly as given (unlike Key.Sign, which marshals it)
// and encodes the envelope; ok is false if body is not JSON.
func signRaw(k *identity.Key, typ, body string) (string, bool) {
	sig, err := k.Private.Sign(append([]byte(typ+"\x00"), body...))
	if err != nil {
		return "", false
	}
	env := identity.Envelope{Type: typ, Signer: k.ID.String(), Body: json.RawMessage(body), Sig: sig}
	s, err := env.Encode()
	return s, err == nil
}
