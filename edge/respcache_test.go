package edge

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestResponseCacheExpiry(t *testing.T) {
	c := newResponseCache(1<<20, newGenerations())
	t0 := time.Now()
	c.add("site", &response{body: []byte("v1"), expires: t0.Add(time.Minute)})
	c.add("cid", &response{body: []byte("immutable")})
	steps := []struct {
		name string
		key  string
		at   time.Time
		hit  bool
	}{
		{"fresh", "site", t0.Add(30 * time.Second), true},
		{"expired: first asker refreshes", "site", t0.Add(61 * time.Second), false},
		{"others get it stale meanwhile", "site", t0.Add(62 * time.Second), true},
		{"not past the grace", "site", t0.Add(time.Minute + staleGrace + time.Second), false},
		{"gone", "site", t0.Add(time.Minute + staleGrace + 2*time.Second), false},
		{"immutable never expires", "cid", t0.Add(1000 * time.Hour), true},
	}
	for _, st := range steps {
		if _, hit := c.get(st.key, st.at); hit != st.hit {
			t.Fatalf("%s: hit = %v, want %v", st.name, hit, st.hit)
		}
	}
	// A refresh replaces the entry.
	c.add("site", &response{body: []byte("v2"), expires: t0.Add(10 * time.Minute)})
	if r, ok := c.get("site", t0.Add(5*time.Minute)); !ok || string(r.body) != "v2" {
		t.Fatal("refreshed entry not served")
	}
	// Replacing an answer (refreshes, concurrent misses for one key)
	// counts its bytes once, so the cache does not fill with ghosts and
	// evict live answers.
	same := newResponseCache(10000, newGenerations())
	for range 100 {
		same.add("k", &response{body: make([]byte, 500)})
	}
	if want := (&response{body: make([]byte, 500)}).size(); same.size() != want {
		t.Fatalf("one answer added 100 times counts %d bytes, want %d", same.size(), want)
	}
	// The byte bound holds.
	small := newResponseCache(2000, newGenerations())
	for i := range 10 {
		small.add(string(rune('a'+i)), &response{body: make([]byte, 500)})
	}
	if small.size() > 2000 {
		t.Fatalf("cache holds %d bytes, bound 2000", small.size())
	}
}

// TestResponseCacheKeepsCacheControl: a hit on an answer with a TTL (an
// IPNS record, a named site) sends the gateway's Cache-Control unchanged,
// every directive kept, and ages it with an Age header.
func TestResponseCacheKeepsCacheControl(t *testing.T) {
	e, err := New(context.Background(), Config{Origin: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	const cc = "public, max-age=1800, stale-while-revalidate=60"
	calls := 0
	h := e.withResponseCache(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Cache-Control", cc)
		w.Write([]byte("record"))
	}))
	for i := range 2 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/ipns/k51test?format=ipns-record", nil))
		if got := rec.Header().Get("Cache-Control"); got != cc {
			t.Fatalf("request %d: Cache-Control %q, want %q", i, got, cc)
		}
		if age := rec.Header().Get("Age"); i == 1 && age == "" {
			t.Fatal("hit without Age")
		}
	}
	if calls != 1 {
		t.Fatalf("handler called %d times, want 1 (second request a hit)", calls)
	}
}

// TestResponseCacheJoinsListHeaders: a hit writes each list-valued CORS
// header (and Vary) on one line, values in order; a miss passes them as
// the handler set them; other multi-valued headers stay as they are.
func TestResponseCacheJoinsListHeaders(t *testing.T) {
	e, err := New(context.Background(), Config{Origin: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	h := e.withResponseCache(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Access-Control-Allow-Methods"] = []string{"GET", "HEAD", "OPTIONS"}
		w.Header()["Vary"] = []string{"Accept", "Accept-Encoding"}
		w.Header()["Link"] = []string{"</a>", "</b>"}
		w.Header().Set("Cache-Control", "public, max-age=29030400, immutable")
		w.Write([]byte("body"))
	}))
	for i, want := range [][]string{{"GET", "HEAD", "OPTIONS"}, {"GET, HEAD, OPTIONS"}} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://x/ipfs/bafkqaaa", nil))
		hdr := rec.Result().Header
		if got := hdr["Access-Control-Allow-Methods"]; len(got) != len(want) || got[0] != want[0] {
			t.Fatalf("response %d: Access-Control-Allow-Methods %q, want %q", i, got, want)
		}
		if i == 1 && (len(hdr["Vary"]) != 1 || hdr.Get("Vary") != "Accept, Accept-Encoding" || len(hdr["Link"]) != 2) {
			t.Fatalf("hit: Vary %q, Link %q", hdr["Vary"], hdr["Link"])
		}
	}
}

// failingWriter is a client that went away: every write fails.
type failingWriter struct{ *httptest.ResponseRecorder }

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestResponseCacheKeepsOnlyWholeAnswers: an answer cut short (the handler
// wrote less than its Content-Length, a write to the client failed, or the
// client went away) is not kept, so it is never replayed to others.
func TestResponseCacheKeepsOnlyWholeAnswers(t *testing.T) {
	tests := []struct {
		name    string
		declare string // Content-Length the handler sets
		write   string
		client  func(*httptest.ResponseRecorder) http.ResponseWriter
		cancel  bool
		kept    bool
	}{
		{"whole", "10", "0123456789", nil, false, true},
		{"whole, no length", "", "0123456789", nil, false, true},
		{"short of its length", "10", "01234", nil, false, false},
		{"client write fails", "10", "0123456789", func(r *httptest.ResponseRecorder) http.ResponseWriter { return failingWriter{r} }, false, false},
		{"client went away", "", "0123456789", nil, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(context.Background(), Config{Origin: "http://127.0.0.1:1"})
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			h := e.withResponseCache(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls++
				w.Header().Set("Cache-Control", "public, max-age=29030400, immutable")
				if tc.declare != "" {
					w.Header().Set("Content-Length", tc.declare)
				}
				w.WriteHeader(200)
				w.Write([]byte(tc.write))
			}))
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				cancel()
			} else {
				defer cancel()
			}
			rec := httptest.NewRecorder()
			var w http.ResponseWriter = rec
			if tc.client != nil {
				w = tc.client(rec)
			}
			h.ServeHTTP(w, httptest.NewRequest("GET", "http://x/ipfs/bafkqaaa", nil).WithContext(ctx))
			rec2 := httptest.NewRecorder()
			h.ServeHTTP(rec2, httptest.NewRequest("GET", "http://x/ipfs/bafkqaaa", nil))
			if kept := calls == 1; kept != tc.kept {
				t.Fatalf("kept = %v (handler called %d times), want %v", kept, calls, tc.kept)
			}
			if tc.kept && rec2.Body.String() != tc.write {
				t.Fatalf("hit body %q, want %q", rec2.Body.String(), tc.write)
			}
		})
	}
}
