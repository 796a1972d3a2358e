package edge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/topcdn/topcdn/originapi"
)

// mapDisk is an answerDisk in memory.
type mapDisk map[string][]byte

func (d mapDisk) Kept(key string) ([]byte, bool)      { v, ok := d[key]; return v, ok }
func (d mapDisk) Keep(key string, value []byte) error { d[key] = value; return nil }

var _ answerDisk = mapDisk(nil)

// TestKeptAnswer: the answer kept on disk stands in for the origin's
// while the origin cannot answer, not once it says the answer is gone.
func TestKeptAnswer(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		wantKept bool
	}{
		{"gone", http.StatusNotFound, false},
		{"failing", http.StatusInternalServerError, true},
		{"overloaded", http.StatusServiceUnavailable, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "no", tc.status)
			}))
			defer srv.Close()
			pool, err := originapi.NewPool([]string{srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			s := &source{pool: pool, http: srv.Client(), disk: mapDisk{"peers": []byte("[]")}}
			ctx := context.Background()
			_, err = s.getRaw(ctx, "/api/v1/peers", 1<<10)
			if err == nil {
				t.Fatalf("getRaw of a %d answered no error", tc.status)
			}
			if _, kept := s.keptAnswer(ctx, "peers", err); kept != tc.wantKept {
				t.Errorf("after %v: kept answer used = %v, want %v", err, kept, tc.wantKept)
			}
		})
	}
}
