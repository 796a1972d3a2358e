package originapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/internal/httpkit"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func get(ctx context.Context, base, path string) (string, error) {
	b, err := httpkit.Get(ctx, http.DefaultClient, base+path, 1<<10)
	return string(b), err
}

// TestPoolFailover: a request to an origin that is gone, or that answers
// 502–504, is run again on the next; refusals are not; a failed origin is
// left alone for its backoff, and used again once it answers.
func TestPoolFailover(t *testing.T) {
	status := map[string]int{}
	serve := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s := status[name+r.URL.Path]; s != 0 {
				http.Error(w, "no", s)
				return
			}
			w.Write([]byte(name))
		}))
	}
	a, b := serve("a"), serve("b")
	defer b.Close()
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	now := time.Unix(1000, 0)
	p, err := NewPool([]string{a.URL, b.URL + "/"}, WithPoolLogger(zap.New(core)), WithPoolMetrics(reg, "test"))
	if err != nil {
		t.Fatal(err)
	}
	p.now = func() time.Time { return now }
	do := func(path string) (string, error) {
		var got string
		err := p.Do(context.Background(), func(ctx context.Context, base string) (err error) {
			got, err = get(ctx, base, path)
			return err
		})
		return got, err
	}
	for _, tc := range []struct {
		path    string
		status  map[string]int
		want    string
		wantErr int // status of the error, 0: none
	}{
		{path: "/x", want: "a"},
		{path: "/busy", status: map[string]int{"a/busy": 503}, want: "b"}, // a down now
		{path: "/x", want: "b"}, // b is current
		{path: "/missing", status: map[string]int{"b/missing": 404}, wantErr: 404},       // a refusal is the answer
		{path: "/broken", status: map[string]int{"b/broken": 500}, wantErr: 500},         // so is a 500
		{path: "/bad", status: map[string]int{"b/bad": 502, "a/bad": 504}, wantErr: 504}, // both tried
	} {
		status = tc.status
		got, err := do(tc.path)
		var re *httpkit.ResponseError
		switch {
		case tc.wantErr != 0 && (!errors.As(err, &re) || re.Status != tc.wantErr):
			t.Errorf("%s: err %v, want status %d", tc.path, err, tc.wantErr)
		case tc.wantErr == 0 && (err != nil || got != tc.want):
			t.Errorf("%s: %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	// Both are down now; after the backoff b (tried first: the last to
	// answer) is back.
	now = now.Add(DefaultPoolMaxBackoff)
	status = nil
	if got, err := do("/x"); err != nil || got != "b" {
		t.Fatalf("after backoff: %q, %v", got, err)
	}
	// a is gone for good: b answers, and a is not asked while down.
	a.Close()
	status = map[string]int{"b/y": 503}
	if _, err := do("/y"); err == nil {
		t.Fatal("both down: no error")
	}
	status = nil
	if got, err := do("/z"); err != nil || got != "b" {
		t.Fatalf("a closed: %q, %v", got, err)
	}
	if n := testutil.ToFloat64(p.metrics.failovers.WithLabelValues(p.urls[0], p.urls[1])) + testutil.ToFloat64(p.metrics.failovers.WithLabelValues(p.urls[1], p.urls[0])); n < 3 {
		t.Errorf("failovers %v, want ≥ 3", n)
	}
	if n := logs.FilterMessage("origin failover").Len(); n < 3 {
		t.Errorf("%d failover logs, want ≥ 3", n)
	}
	if n := logs.FilterMessage("origin back").Len(); n == 0 {
		t.Error("no 'origin back' log")
	}
	if n := testutil.ToFloat64(p.metrics.up.WithLabelValues(p.urls[1])); n != 1 {
		t.Errorf("b up = %v", n)
	}
}

// TestPoolStopsWithContext: a canceled request is not run elsewhere and
// marks no origin down.
func TestPoolStopsWithContext(t *testing.T) {
	p, err := NewPool([]string{"http://127.0.0.1:1", "http://127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err = p.Do(ctx, func(ctx context.Context, base string) error {
		calls++
		cancel()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	if p.Current() != "http://127.0.0.1:1" {
		t.Errorf("current %s", p.Current())
	}
}

func TestNewPoolRefuses(t *testing.T) {
	for _, urls := range [][]string{nil, {"ftp://x"}, {"127.0.0.1:80"}, {"http://a", "http://a/"}, {"http://a?q=1"}} {
		if _, err := NewPool(urls); err == nil {
			t.Errorf("%q: no error", urls)
		}
	}
	if got := SplitURLs("http://a, http://b", "", "http://c"); strings.Join(got, " ") != "http://a http://b http://c" {
		t.Errorf("SplitURLs: %q", got)
	}
}

// TestPoolOrder: each origin is tried once per request: the last to
// answer first, then the others up in configured order, then those down,
// soonest back first.
func TestPoolOrder(t *testing.T) {
	p, err := NewPool([]string{"http://a", "http://b", "http://c", "http://d"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	p.current = 2
	p.state[0].downUntil = now.Add(5 * time.Second)
	p.state[3].downUntil = now.Add(time.Second)
	if got, want := p.orderLocked(), []int{2, 1, 3, 0}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	p.state[2].downUntil = now.Add(3 * time.Second)
	if got, want := p.orderLocked(), []int{1, 3, 2, 0}; !slices.Equal(got, want) {
		t.Errorf("current down: order %v, want %v", got, want)
	}
}
