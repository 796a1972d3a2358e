package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/storageapi"
)

// testNow is the clock of test servers and clients, so signed orders in
// seed corpora stay valid.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// testKeys are fixed keys, so signed orders in seed corpora stay valid.
type testKeys struct {
	origin, peer, reader, other *identity.Key
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	return testKeys{origin: testkit.Key(t, 1), peer: testkit.Key(t, 2), reader: testkit.Key(t, 3), other: testkit.Key(t, 4)}
}

// testServer is a storage peer on a fixed clock with its keys.
type testServer struct {
	*Server
	keys testKeys
	dir  string
	reg  *prometheus.Registry
}

func newTestServer(t testing.TB, capacity int64) *testServer {
	t.Helper()
	return openTestServer(t, t.TempDir(), capacity)
}

func openTestServer(t testing.TB, dir string, capacity int64) *testServer {
	t.Helper()
	keys := newTestKeys(t)
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), Config{
		DataDir:  dir,
		Key:      keys.peer,
		OriginID: keys.origin.ID,
		Capacity: capacity,
		Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return testNow }
	t.Cleanup(func() { s.Close() })
	return &testServer{Server: s, keys: keys, dir: dir, reg: reg}
}

// testClient returns a Client on the test clock signing with key.
func testClient(key *identity.Key) *storageapi.Client {
	return storageapi.NewClient(key, nil, storageapi.WithClock(func() time.Time { return testNow }))
}

// serve runs ts's handler on a loopback HTTP server and returns its URL.
func (ts *testServer) serve(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(ts.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// do sends req to ts's handler.
func (ts *testServer) do(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	ts.Handler().ServeHTTP(rec, req)
	return rec
}

// putShard stores data through the handler with a valid order.
func (ts *testServer) putShard(t testing.TB, data []byte) string {
	t.Helper()
	id := storageapi.ShardID(data)
	rec := ts.do(putRequest(t, ts.keys.origin, ts.writeOrder(id, int64(len(data))), id, data))
	if rec.Code != http.StatusCreated && rec.Code != http.StatusOK {
		t.Fatalf("put %s: %d %s", id, rec.Code, rec.Body)
	}
	return id
}

func (ts *testServer) writeOrder(id string, size int64) storageapi.WriteOrder {
	return storageapi.WriteOrder{Peer: ts.ID().String(), Shard: id, Size: size, Expires: testNow.Add(time.Minute)}
}

func (ts *testServer) readOrder(id string, off, length int64, serial string) storageapi.ReadOrder {
	return storageapi.ReadOrder{Peer: ts.ID().String(), Shard: id, Offset: off, Length: length,
		Expires: testNow.Add(time.Minute), Serial: serial}
}

// tmpFiles lists the files in ts's temp directory.
func (ts *testServer) tmpFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(ts.dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// rejected returns topcdn_storage_orders_rejected_total{reason}.
func (ts *testServer) rejected(reason string) float64 {
	return counterValue(ts.metrics.ordersRejected.WithLabelValues(reason))
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// encodeOrder signs body as typ with key and encodes it for OrderHeader.
func encodeOrder(t testing.TB, key *identity.Key, typ string, body any) string {
	t.Helper()
	env, err := key.Sign(typ, body)
	if err != nil {
		t.Fatal(err)
	}
	s, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func putRequest(t testing.TB, key *identity.Key, o storageapi.WriteOrder, id string, body []byte) *http.Request {
	t.Helper()
	req := httptest.NewRequest(http.MethodPut, "/shards/"+id, bytes.NewReader(body))
	req.Header.Set(storageapi.OrderHeader, encodeOrder(t, key, storageapi.TypeWriteOrder, o))
	return req
}

func getRequest(t testing.TB, key *identity.Key, o storageapi.ReadOrder, id, rng string) *http.Request {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/shards/"+id, nil)
	req.Header.Set(storageapi.OrderHeader, encodeOrder(t, key, storageapi.TypeReadOrder, o))
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	return req
}

// randomShard returns n deterministic pseudo-random bytes.
func randomShard(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// errorMessage decodes a JSON error answer.
func errorMessage(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var e storageapi.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("error answer %d is not a JSON error: %q", rec.Code, rec.Body)
	}
	return e.Error
}
