package testkit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestKey(t *testing.T) {
	// Signed fixtures (fuzz corpora of storage and billing) hold this
	// key's signatures: its derivation must not change.
	if got, want := Key(t, 1).ID.String(), "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"; got != want {
		t.Errorf("Key(1) = %s, want %s", got, want)
	}
	if Key(t, 2).ID == Key(t, 1).ID || Key(t, 2).ID != Key(t, 2).ID {
		t.Error("keys of seeds 1 and 2 are the same, or seed 2 gives two keys")
	}
}

func TestWaitFor(t *testing.T) {
	start := time.Now()
	n := 0
	WaitFor(t, 5*time.Second, "the third call", func() bool { n++; return n == 3 })
	if n != 3 || time.Since(start) > 500*time.Millisecond {
		t.Errorf("WaitFor returned after %d calls and %s, want 3 calls 10 ms apart", n, time.Since(start))
	}
}

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"accept":"` + r.Header.Get("Accept") + `"}`))
	}))
	defer srv.Close()
	if code, body := Get(t, srv.URL+"/v", "application/vnd.ipld.raw"); code != 200 || string(body) != `{"accept":"application/vnd.ipld.raw"}` {
		t.Errorf("Get = %d %s", code, body)
	}
	if code, _ := Get(t, srv.URL+"/nope", ""); code != 404 {
		t.Errorf("Get of a missing path = %d", code)
	}
	var v struct{ Accept string }
	GetJSON(t, srv.URL+"/v", &v)
	if v.Accept != "" {
		t.Errorf("GetJSON sent Accept %q", v.Accept)
	}
}
