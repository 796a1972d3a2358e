package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestOriginIDs: an origin reports the set verifiers pin at /healthz (its
// own ID alone by default), and refuses to start with a set that leaves it
// out.
func TestOriginIDs(t *testing.T) {
	ctx := context.Background()
	a, b := testkit.Key(t, 11), testkit.Key(t, 12)
	tests := []struct {
		name    string
		ids     []peer.ID
		want    []string
		wantErr bool
	}{
		{name: "default", want: []string{a.ID.String()}},
		{name: "a set", ids: []peer.ID{b.ID, a.ID}, want: []string{b.ID.String(), a.ID.String()}},
		{name: "without itself", ids: []peer.ID{b.ID}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := New(ctx, Config{DataDir: t.TempDir(), Key: a, OriginIDs: tc.ids})
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "not among OriginIDs") {
					t.Fatalf("New: %v, want a refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			rec := httptest.NewRecorder()
			o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			var h health
			if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("/healthz: %d %s", rec.Code, rec.Body)
			}
			if h.Status != "ok" || h.PeerID != a.ID.String() || !slices.Equal(h.OriginIDs, tc.want) {
				t.Fatalf("/healthz: %+v, want origin_ids %v", h, tc.want)
			}
		})
	}
}

// TestOriginsWarnOfMismatch: origins sharing a PostgreSQL database record
// themselves, and one set up otherwise than another (here its quota) is
// warned of.
func TestOriginsWarnOfMismatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pgtest.DSN(t)
	keys := []*identity.Key{testkit.Key(t, 11), testkit.Key(t, 12)}
	ids := []peer.ID{keys[0].ID, keys[1].ID}
	core, logs := observer.New(zap.WarnLevel)
	var origins []*Origin
	for i, key := range keys {
		o, err := New(ctx, Config{DataDir: t.TempDir(), DB: dsn, Key: key, OriginIDs: ids, PublisherQuota: int64(1000 * (i + 1)),
			URL: fmt.Sprintf("http://origin-%d.test", i), Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		go o.Run(ctx)
		origins = append(origins, o)
		time.Sleep(200 * time.Millisecond) // the first records itself before the second looks
	}
	testkit.WaitFor(t, 15*time.Second, "a warning of the mismatch", func() bool {
		return logs.FilterMessageSnippet("set up otherwise").Len() > 0
	})
	var n int
	if err := origins[0].db.QueryRowContext(ctx, `SELECT count(*) FROM origins WHERE url LIKE 'http://origin-%'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d origins recorded (%v), want 2", n, err)
	}
}
