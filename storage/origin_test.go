package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestNewWaitsForOrigin: a peer started while its origin cannot be reached
// (connections cut, or errors) does not give up: it retries with backoff,
// logging each retry, until the origin answers, and stops when its ctx
// ends.
func TestNewWaitsForOrigin(t *testing.T) {
	origin := testkit.Key(t, 1)
	tests := []struct {
		name    string
		fail    func(w http.ResponseWriter) // what a failing request gets
		failing int64                       // requests that fail; -1: all
		wantErr bool
	}{
		{"connections cut, then up", func(http.ResponseWriter) { panic(http.ErrAbortHandler) }, 3, false},
		{"503, then up", func(w http.ResponseWriter) { http.Error(w, "starting", http.StatusServiceUnavailable) }, 4, false},
		{"never up: stops when ctx ends", func(w http.ResponseWriter) { http.Error(w, "down", http.StatusBadGateway) }, -1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n := asked.Add(1); tc.failing < 0 || n <= tc.failing {
					tc.fail(w)
					return
				}
				json.NewEncoder(w).Encode(map[string]string{"peer_id": origin.ID.String()})
			}))
			defer srv.Close()
			core, logs := observer.New(zapcore.InfoLevel)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if tc.wantErr {
				cancel()
				ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
			}
			defer cancel()
			s, err := New(ctx, Config{DataDir: t.TempDir(), Origin: srv.URL, Key: testkit.Key(t, 2), Logger: zap.New(core),
				originBackoff: backoff{min: 10 * time.Millisecond, max: 40 * time.Millisecond}})
			retries := logs.FilterMessageSnippet("origin unreachable, retrying in ").All()
			if tc.wantErr {
				if err == nil {
					s.Close()
					t.Fatal("New succeeded with the origin down")
				}
				// The last try may itself be cut by the deadline: the
				// origin's 502 shows in the retries logged before it.
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %q, want the deadline", err)
				}
				if len(retries) < 3 {
					t.Fatalf("%d retries logged in 300 ms at most 40 ms apart", len(retries))
				}
				if got := fmt.Sprint(retries[0].ContextMap()); !strings.Contains(got, "502") {
					t.Errorf("first retry logged %s, want the origin's 502", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer s.Close()
			if s.OriginID() != origin.ID {
				t.Errorf("origin ID %s, want %s", s.OriginID(), origin.ID)
			}
			if len(retries) != int(tc.failing) {
				t.Errorf("%d retries logged, want %d", len(retries), tc.failing)
			}
			for _, e := range retries {
				if e.Level != zapcore.WarnLevel || e.ContextMap()["origin"] != srv.URL || e.ContextMap()["error"] == nil {
					t.Errorf("retry logged as %v %q %v, want a warning with the origin and the error", e.Level, e.Message, e.ContextMap())
				}
			}
		})
	}
}

// TestBackoffDelay: delays double from min, stop at max, and are jittered
// between half and all of their step.
func TestBackoffDelay(t *testing.T) {
	b := defaultOriginBackoff
	tests := []struct {
		n        int
		rnd      float64
		min, max time.Duration
	}{
		{0, 0, 250 * time.Millisecond, 250 * time.Millisecond},
		{0, 0.999999, 499 * time.Millisecond, 500 * time.Millisecond},
		{1, 0.5, 750 * time.Millisecond, 750 * time.Millisecond},
		{3, 0, 2 * time.Second, 2 * time.Second},
		{6, 0.999999, 29 * time.Second, 30 * time.Second}, // 32 s capped at 30 s
		{7, 0, 15 * time.Second, 15 * time.Second},
		{1000, 0.999999, 29 * time.Second, 30 * time.Second},
	}
	for _, tc := range tests {
		d := b.delay(tc.n, func() float64 { return tc.rnd })
		if d < tc.min || d > tc.max {
			t.Errorf("delay(%d, %g) = %s, want in [%s, %s]", tc.n, tc.rnd, d, tc.min, tc.max)
		}
	}
}
