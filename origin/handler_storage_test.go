package origin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/storageapi"
)

// TestStorageRoutes: the storage side's routes answer with the status its
// errors mean (durability's sentinels), and its results as JSON.
func TestStorageRoutes(t *testing.T) { pgtest.Dialects(t, testStorageRoutes) }

func testStorageRoutes(t *testing.T, dsn string) {
	o := newTestOriginOn(t, dsn)
	h := o.Handler()
	peerKey, _ := identity.Generate(nil)
	heartbeat := func(at time.Time) string {
		env, err := peerKey.Sign(storageapi.TypeHeartbeat, storageapi.Heartbeat{Peer: peerKey.ID.String(),
			Addr: "http://127.0.0.1:9001", Capacity: 100, Free: 60, Time: at})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(env)
		return string(b)
	}
	now := time.Now()
	first := heartbeat(now)
	root := newTestDAG(t, "not striped", 1).root.String()
	tests := []struct {
		name, method, target, body, remote string
		want                               int
		wantBody                           string
	}{
		{"heartbeat registers", "POST", "/api/v1/peers/heartbeat", first, "", http.StatusNoContent, ""},
		{"heartbeat replayed", "POST", "/api/v1/peers/heartbeat", first, "", http.StatusConflict, "replayed"},
		{"heartbeat stale", "POST", "/api/v1/peers/heartbeat", heartbeat(now.Add(-time.Hour)), "", http.StatusBadRequest, "stale"},
		{"heartbeat malformed", "POST", "/api/v1/peers/heartbeat", "{", "", http.StatusBadRequest, "malformed JSON"},
		{"peers", "GET", "/api/v1/peers", "", "", http.StatusOK, peerKey.ID.String()},
		{"manifest of a root not striped", "GET", "/api/v1/manifests/" + root, "", "", http.StatusNotFound, "no manifest"},
		{"manifest of a bad CID", "GET", "/api/v1/manifests/nope", "", "", http.StatusBadRequest, "root"},
		{"storage status", "GET", "/api/v1/storage/status", "", "", http.StatusOK, `"segments": 0`},
		{"audit from afar", "POST", "/api/v1/storage/audit", "", "192.0.2.1:4000", http.StatusForbidden, "origin's host"},
		{"audit from the host", "POST", "/api/v1/storage/audit", "", "127.0.0.1:4000", http.StatusOK, `"failed": 0`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			if tc.remote != "" {
				req.RemoteAddr = tc.remote
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want || !bytes.Contains(rec.Body.Bytes(), []byte(tc.wantBody)) {
				t.Fatalf("%s %s: %d %s; want %d with %q", tc.method, tc.target, rec.Code, rec.Body, tc.want, tc.wantBody)
			}
		})
	}
	var st originapi.StorageStatus
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/storage/status", nil))
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || len(st.Peers) != 1 || !st.Peers[0].Healthy {
		t.Fatalf("status %+v (%v), want the one healthy peer", st, err)
	}
}
