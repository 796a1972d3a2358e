package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/storageapi"
)

func TestDelete(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t, 1<<20)
	url := ts.serve(t)
	data := randomShard(9, 500)
	id := ts.putShard(t, data)

	if err := testClient(ts.keys.other).Delete(ctx, ts.ID(), url, id); !errors.Is(err, storageapi.ErrForbidden) {
		t.Fatalf("delete signed by a non-origin key: err = %v, want 403", err)
	}
	req := httptest.NewRequest(http.MethodDelete, "/shards/"+id, nil)
	if rec := ts.do(req); rec.Code != http.StatusForbidden {
		t.Fatalf("delete without an order: %d", rec.Code)
	}
	if _, ok := ts.store.size(id); !ok {
		t.Fatal("shard deleted without an origin order")
	}
	origin := testClient(ts.keys.origin)
	if err := origin.Delete(ctx, ts.ID(), url, id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ts.store.path(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("shard file still there: %v", err)
	}
	if st, _ := origin.Status(ctx, url); st.Used != 0 || st.Shards != 0 {
		t.Fatalf("status after delete %+v", st)
	}
	err := origin.Delete(ctx, ts.ID(), url, id)
	var pe *storageapi.PeerError
	if !errors.Is(err, storageapi.ErrNotFound) || !errors.As(err, &pe) || pe.Status != http.StatusNotFound {
		t.Fatalf("second delete: err = %v, want a 404 PeerError", err)
	}
}

func TestAudit(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t, 1<<20)
	url := ts.serve(t)
	data := randomShard(10, 3000)
	id := ts.putShard(t, data)
	origin := testClient(ts.keys.origin)

	tests := []struct {
		name        string
		client      *storageapi.Client
		shard       string
		off, length int64
		wantErr     error
	}{
		{name: "start", client: origin, shard: id, off: 0, length: 100},
		{name: "end", client: origin, shard: id, off: 2900, length: 100},
		{name: "whole", client: origin, shard: id, off: 0, length: 3000},
		{name: "not the origin", client: testClient(ts.keys.reader), shard: id, off: 0, length: 100, wantErr: storageapi.ErrForbidden},
		{name: "beyond the shard", client: origin, shard: id, off: 2950, length: 100, wantErr: storageapi.ErrRangeNotSatisfiable},
		{name: "shard not held", client: origin, shard: storageapi.ShardID([]byte("x")), off: 0, length: 1, wantErr: storageapi.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.client.Audit(ctx, ts.ID(), url, tc.shard, tc.off, tc.length)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[tc.off:tc.off+tc.length]) {
				t.Fatal("audit data differs from the shard")
			}
		})
	}
	if _, err := origin.Audit(ctx, ts.ID(), url, id, 0, storageapi.MaxAuditLength+1); err == nil {
		t.Fatal("audit over MaxAuditLength accepted")
	}
	// The server refuses an over-long audit too.
	env, _ := ts.keys.origin.Sign(storageapi.TypeAudit, storageapi.Audit{Peer: ts.ID().String(), Shard: id, Length: storageapi.MaxAuditLength + 1,
		Nonce: []byte{1}, Expires: testNow.Add(time.Minute)})
	body, _ := json.Marshal(env)
	rec := ts.do(httptest.NewRequest(http.MethodPost, "/shards/"+id+"/audit", bytes.NewReader(body)))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("over-long audit: %d %s", rec.Code, rec.Body)
	}
}

func TestAuditClientChecksTheAnswer(t *testing.T) {
	keys := newTestKeys(t)
	id := storageapi.ShardID([]byte("shard"))
	tests := []struct {
		name   string
		answer func(a storageapi.Audit) storageapi.AuditAnswer
	}{
		{"wrong proof", func(a storageapi.Audit) storageapi.AuditAnswer {
			d := make([]byte, a.Length)
			return storageapi.AuditAnswer{Data: d, Proof: storageapi.AuditProof([]byte("other nonce"), d)}
		}},
		{"short data", func(a storageapi.Audit) storageapi.AuditAnswer {
			d := make([]byte, a.Length-1)
			return storageapi.AuditAnswer{Data: d, Proof: storageapi.AuditProof(a.Nonce, d)}
		}},
		{"no proof", func(a storageapi.Audit) storageapi.AuditAnswer {
			return storageapi.AuditAnswer{Data: make([]byte, a.Length)}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var env identity.Envelope
				var a storageapi.Audit
				if err := json.NewDecoder(r.Body).Decode(&env); err != nil {
					t.Error(err)
				}
				if _, err := env.Open(storageapi.TypeAudit, &a); err != nil {
					t.Error(err)
				}
				httpkit.WriteJSON(w, http.StatusOK, tc.answer(a))
			}))
			defer srv.Close()
			if _, err := testClient(keys.origin).Audit(context.Background(), keys.peer.ID, srv.URL, id, 0, 10); err == nil {
				t.Fatal("bad audit answer accepted")
			}
		})
	}
}
