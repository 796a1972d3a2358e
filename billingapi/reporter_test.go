package billingapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit"
)

func TestClientPrefix(t *testing.T) {
	tests := []struct {
		addr, want string
	}{
		{"192.0.2.77", "192.0.2.0/24"},
		{"::ffff:192.0.2.77", "192.0.2.0/24"},
		{"2001:db8:aaaa:bbbb::1", "2001:db8:aaaa::/48"},
		// Loopback outside 127.0.0.0/24 is one client: an edge's
		// requests to itself, from any of its loopback addresses.
		{"127.0.0.1", "127.0.0.0/24"},
		{"127.0.0.200", "127.0.0.0/24"},
		{"127.1.0.1", "127.0.0.0/8"},
		{"127.3.9.5", "127.0.0.0/8"},
		{"::1", "::1/128"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			if got := ClientPrefix(netip.MustParseAddr(tc.addr)).String(); got != tc.want {
				t.Fatalf("prefix %s, want %s", got, tc.want)
			}
		})
	}
	salt := bytes.Repeat([]byte{1}, SaltSize)
	a, b, c := ClientHash(salt, netip.MustParseAddr("192.0.2.1")), ClientHash(salt, netip.MustParseAddr("192.0.2.200")),
		ClientHash(salt, netip.MustParseAddr("192.0.3.1"))
	if !bytes.Equal(a, b) || bytes.Equal(a, c) || len(a) != ClientHashSize {
		t.Fatal("hashes must match within a /24 and differ across")
	}
	if bytes.Equal(a, ClientHash(bytes.Repeat([]byte{2}, SaltSize), netip.MustParseAddr("192.0.2.1"))) {
		t.Fatal("another epoch's salt gives the same hash")
	}
}

// TestReporter posts a batch to a billing stand-in that fails the first
// attempt: the batch is resent byte for byte, and holds every response
// observed with increasing serials and hashed client prefixes only.
func TestReporter(t *testing.T) {
	key := testkit.Key(t, 30)
	var (
		mu     sync.Mutex
		bodies [][]byte
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, b)
		if len(bodies) == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"accepted":3}`))
	}))
	defer srv.Close()
	rep := NewReporter(key, srv.URL, WithEpoch(time.Hour), WithPublicURL("http://edge.test/"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rep.Run(ctx) }()
	now := time.Now()
	clients := []string{"192.0.2.10", "192.0.2.99", "2001:db8::1"}
	for i, c := range clients {
		rep.Observe(Served{Name: "blog", CID: "bafy" + string(rune('a'+i)), Bytes: int64(100 * (i + 1)), Status: 200,
			Time: now, Client: netip.MustParseAddr(c)})
		// Responses that name no object (a 304 on a miss, a gateway
		// error) or would not pass billing's checks are left out; one of
		// them must not make billing refuse the batch.
		rep.Observe(Served{Name: "blog", Bytes: 0, Status: 304, Time: now, Client: netip.MustParseAddr(c)})
		rep.Observe(Served{Name: strings.Repeat("x", MaxField+1), CID: "bafyz", Bytes: 9, Status: 200, Time: now})
		rep.Observe(Served{CID: "bafyz", Bytes: 9, Time: now})
	}
	time.Sleep(50 * time.Millisecond) // Run has opened its epoch
	cancel()
	<-done

	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || !bytes.Equal(bodies[0], bodies[1]) {
		t.Fatalf("%d posts; the resend must repeat the first byte for byte", len(bodies))
	}
	env, b, signer, err := DecodeBatch(bodies[0])
	if err != nil || signer != key.ID || env.Type != TypeBatch {
		t.Fatalf("decode: %v", err)
	}
	if b.EpochSeconds != 3600 || b.Epoch != epochOf(now, time.Hour) || b.URL != "http://edge.test" || len(b.Records) != 3 {
		t.Fatalf("batch %+v", b)
	}
	for i, r := range b.Records {
		if i > 0 && r.Serial <= b.Records[i-1].Serial {
			t.Fatalf("serials not increasing: %+v", b.Records)
		}
		if r.Bytes != int64(100*(i+1)) || r.Name != "blog" {
			t.Fatalf("record %d: %+v", i, r)
		}
		if !bytes.Equal(r.Client, ClientHash(b.Salt, netip.MustParseAddr(clients[i]))) {
			t.Fatalf("record %d: client hash", i)
		}
		if bytes.Contains(bodies[0], []byte(clients[i])) {
			t.Fatalf("raw client address %s left the edge", clients[i])
		}
	}
	if !bytes.Equal(b.Records[0].Client, b.Records[1].Client) {
		t.Fatal("two clients of one /24 hash differently")
	}
}

// TestReporterClosesEpochs checks that the reporter sends each epoch's
// batch when the epoch ends, with a new sequence number.
func TestReporterClosesEpochs(t *testing.T) {
	key := testkit.Key(t, 31)
	got := make(chan []byte, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- b
	}))
	defer srv.Close()
	rep := NewReporter(key, srv.URL, WithEpoch(time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rep.Run(ctx)
	var seqs []uint64
	for i := range 2 {
		time.Sleep(20 * time.Millisecond)
		rep.Observe(Served{CID: "bafy", Bytes: int64(7 + i), Status: 200, Time: time.Now(), Client: netip.MustParseAddr("192.0.2.1")})
		if tot := rep.Totals(); tot.Bytes != uint64(7+i) {
			t.Fatalf("open epoch totals %+v, want %d bytes", tot, 7+i)
		}
		select {
		case body := <-got:
			_, b, _, err := DecodeBatch(body)
			if err != nil || len(b.Records) != 1 {
				t.Fatalf("batch %d: %v", i, err)
			}
			seqs = append(seqs, b.Seq)
			// The totals an edge's heartbeats carry match the batch
			// signed for the epoch, to the byte.
			if tot := rep.Totals(); tot.Prev != b.Epoch || tot.PrevBytes != uint64(b.Records[0].Bytes) || tot.Epoch <= b.Epoch {
				t.Fatalf("totals %+v after batch of epoch %d with %d bytes", tot, b.Epoch, b.Records[0].Bytes)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("epoch %d was not reported", i)
		}
	}
	if seqs[1] != seqs[0]+1 {
		t.Fatalf("sequences %v", seqs)
	}
}
