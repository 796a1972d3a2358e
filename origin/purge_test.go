package origin

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
)

// purgeOrigin is an origin at a fixed clock where alice publishes "blog"
// and bob publishes "docs".
type purgeOrigin struct {
	*Origin
	now        time.Time
	alice, bob *identity.Key
}

func newPurgeOrigin(t testing.TB, dsn string) *purgeOrigin {
	t.Helper()
	po := &purgeOrigin{Origin: newTestOriginOn(t, dsn), now: time.Now().UTC().Truncate(time.Millisecond),
		alice: testkit.Key(t, 1), bob: testkit.Key(t, 2)}
	po.Origin.now = func() time.Time { return po.now }
	d := newTestDAG(t, "purge", 1)
	if _, err := ingest(t, po.Origin, []cid.Cid{d.root}, d.blocks...); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]*identity.Key{"blog": po.alice, "docs": po.bob} {
		if _, err := po.ClaimName(context.Background(), name, ipns.NameFromPeer(k.ID), record(t, k, d.root, 1, po.now.Add(time.Hour), name)); err != nil {
			t.Fatal(err)
		}
	}
	return po
}

// purge is a purge of "blog" by alice at the origin's clock: all it needs
// is a fresh nonce.
func (po *purgeOrigin) purge(nonce int) originapi.Purge {
	return originapi.Purge{Name: "blog", IPNS: ipns.NameFromPeer(po.alice.ID).String(), Paths: []string{"/about.html"},
		Time: po.now, Nonce: fmt.Sprintf("test-nonce-%06d", nonce)}
}

// sign signs p with k as it is, valid or not (SignPurge would refuse
// invalid fields), and returns the request body.
func sign(t testing.TB, k *identity.Key, p originapi.Purge) []byte {
	t.Helper()
	env, err := k.Sign(originapi.TypePurge, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post posts body as a purge of name, and returns the answer.
func (po *purgeOrigin) post(name string, body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	po.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/names/"+name+"/purge", bytes.NewReader(body)))
	return rec
}

// purges returns the purges on the name-change stream.
func (po *purgeOrigin) purges(t testing.TB) []originapi.NameChange {
	t.Helper()
	cs, err := origindb.Changes(context.Background(), po.db, 0, 1<<62, 1000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var ps []originapi.NameChange
	for _, c := range cs {
		if c.Kind == originapi.ChangePurge {
			ps = append(ps, c)
		}
	}
	return ps
}

// TestPurge: each refusal keeps the stream as it was; a purge taken is
// appended to it, with the envelope as signed, and answered with its ID.
func TestPurge(t *testing.T) {
	tests := []struct {
		name     string
		prepare  func(t *testing.T, po *purgeOrigin) // optional, before the request
		path     string                              // default: blog
		body     func(t *testing.T, po *purgeOrigin) []byte
		wantCode int
		wantMsg  string // part of the error message
		appended bool   // a purge was appended to the stream
	}{
		{
			name:     "paths",
			body:     func(t *testing.T, po *purgeOrigin) []byte { return sign(t, po.alice, po.purge(1)) },
			wantCode: http.StatusOK, appended: true,
		},
		{
			name: "whole site",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Paths = nil
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusOK, appended: true,
		},
		{
			name: "within the skew",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Time = po.now.Add(-originapi.PurgeSkew + time.Second)
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusOK, appended: true,
		},
		{
			name: "wrong signer",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.IPNS = ipns.NameFromPeer(po.bob.ID).String()
				return sign(t, po.bob, p)
			},
			wantCode: http.StatusForbidden, wantMsg: "must be signed by that key",
		},
		{
			name:     "IPNS name not the signer's",
			body:     func(t *testing.T, po *purgeOrigin) []byte { return sign(t, po.bob, po.purge(1)) },
			wantCode: http.StatusBadRequest, wantMsg: "signed by",
		},
		{
			name: "bad signature",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				env, err := po.alice.Sign(originapi.TypePurge, po.purge(1))
				if err != nil {
					t.Fatal(err)
				}
				env.Sig[0] ^= 1
				b, _ := json.Marshal(env)
				return b
			},
			wantCode: http.StatusForbidden, wantMsg: "signature",
		},
		{
			name: "another envelope type",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				env, err := po.alice.Sign(originapi.TypeNameChanges, po.purge(1))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := json.Marshal(env)
				return b
			},
			wantCode: http.StatusBadRequest, wantMsg: originapi.TypePurge,
		},
		{
			name:     "posted for another name",
			path:     "docs",
			body:     func(t *testing.T, po *purgeOrigin) []byte { return sign(t, po.alice, po.purge(1)) },
			wantCode: http.StatusBadRequest, wantMsg: "is signed for name",
		},
		{
			name: "no such name",
			path: "nosuch",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Name = "nosuch"
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusNotFound,
		},
		{
			name: "stale time",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Time = po.now.Add(-originapi.PurgeSkew - time.Second)
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusBadRequest, wantMsg: "stale",
		},
		{
			name: "time in the future",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Time = po.now.Add(originapi.PurgeSkew + time.Second)
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusBadRequest, wantMsg: "future",
		},
		{
			name: "replayed nonce",
			prepare: func(t *testing.T, po *purgeOrigin) {
				if rec := po.post("blog", sign(t, po.alice, po.purge(1))); rec.Code != http.StatusOK {
					t.Fatalf("first purge: HTTP %d %s", rec.Code, rec.Body)
				}
			},
			body:     func(t *testing.T, po *purgeOrigin) []byte { return sign(t, po.alice, po.purge(1)) },
			wantCode: http.StatusConflict, wantMsg: "already taken",
		},
		{
			name: "same nonce, other paths",
			prepare: func(t *testing.T, po *purgeOrigin) {
				if rec := po.post("blog", sign(t, po.alice, po.purge(1))); rec.Code != http.StatusOK {
					t.Fatalf("first purge: HTTP %d %s", rec.Code, rec.Body)
				}
			},
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Paths = []string{"/"}
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusConflict,
		},
		{
			name: "too many paths",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Paths = nil
				for i := range originapi.MaxPurgePaths + 1 {
					p.Paths = append(p.Paths, fmt.Sprintf("/p%d", i))
				}
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusBadRequest, wantMsg: "paths",
		},
		{
			name: "immutable path",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Paths = []string{"/ipfs/bafy/index.html"}
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusBadRequest, wantMsg: "/ipfs/",
		},
		{
			name: "short nonce",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				p := po.purge(1)
				p.Nonce = "short"
				return sign(t, po.alice, p)
			},
			wantCode: http.StatusBadRequest, wantMsg: "nonce",
		},
		{
			name:     "malformed body",
			body:     func(t *testing.T, po *purgeOrigin) []byte { return []byte("purge blog please") },
			wantCode: http.StatusBadRequest, wantMsg: "malformed",
		},
		{
			name: "trailing data",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				return append(sign(t, po.alice, po.purge(1)), []byte(" {}")...)
			},
			wantCode: http.StatusBadRequest, wantMsg: "trailing",
		},
		{
			name: "body too large",
			body: func(t *testing.T, po *purgeOrigin) []byte {
				return []byte(`{"type":"` + strings.Repeat("x", originapi.MaxPurgeSize) + `"}`)
			},
			wantCode: http.StatusRequestEntityTooLarge,
		},
		{
			name: "rate limit",
			prepare: func(t *testing.T, po *purgeOrigin) {
				for i := range purgesPerMinute {
					if rec := po.post("blog", sign(t, po.alice, po.purge(100+i))); rec.Code != http.StatusOK {
						t.Fatalf("purge %d: HTTP %d %s", i, rec.Code, rec.Body)
					}
				}
			},
			body:     func(t *testing.T, po *purgeOrigin) []byte { return sign(t, po.alice, po.purge(1)) },
			wantCode: http.StatusTooManyRequests, wantMsg: "too often",
		},
		{
			name: "rate limit of another name",
			prepare: func(t *testing.T, po *purgeOrigin) {
				for i := range purgesPerMinute + 1 {
					p := originapi.Purge{Name: "docs", IPNS: ipns.NameFromPeer(po.bob.ID).String(), Time: po.now,
						Nonce: fmt.Sprintf("docs-nonce-%06d", i)}
					po.post("docs", sign(t, po.bob, p))
				}
			},
			body:     func(t *testing.T, po *purgeOrigin) []byte { return sign(t, po.alice, po.purge(1)) },
			wantCode: http.StatusOK, appended: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			po := newPurgeOrigin(t, "")
			if tc.prepare != nil {
				tc.prepare(t, po)
			}
			before := po.purges(t)
			body := tc.body(t, po)
			rec := po.post(cmp.Or(tc.path, "blog"), body)
			if rec.Code != tc.wantCode {
				t.Fatalf("HTTP %d %s, want %d", rec.Code, rec.Body, tc.wantCode)
			}
			if !strings.Contains(rec.Body.String(), tc.wantMsg) {
				t.Errorf("answer %s, want it to say %q", rec.Body, tc.wantMsg)
			}
			after := po.purges(t)
			if appended := len(after) > len(before); appended != tc.appended || len(after) > len(before)+1 {
				t.Fatalf("%d purges on the stream, then %d; want one appended: %v", len(before), len(after), tc.appended)
			}
			if rec.Code == http.StatusTooManyRequests {
				if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 1 {
					t.Errorf("Retry-After %q, want seconds", rec.Header().Get("Retry-After"))
				}
			}
			if !tc.appended {
				return
			}
			var res purgeResult
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			c := after[len(after)-1]
			var env identity.Envelope
			json.Unmarshal(body, &env)
			if c.ID != res.ID || c.Name != "blog" || c.IPNS != ipns.NameFromPeer(po.alice.ID).String() || c.Record != nil ||
				c.Purge == nil || !bytes.Equal(c.Purge.Body, env.Body) || !bytes.Equal(c.Purge.Sig, env.Sig) || !c.At.Equal(po.now) {
				t.Fatalf("answered ID %d, streamed %+v", res.ID, c)
			}
			if _, err := originapi.OpenPurge(c.Purge); err != nil {
				t.Fatalf("the streamed purge does not open: %v", err)
			}
		})
	}
}

// TestPurgeRateLimited: a purge refused for its rate keeps its nonce, so
// it is taken once the Retry-After has passed; it wakes the stream's
// readers and is counted.
func TestPurgeRateLimited(t *testing.T) { pgtest.Dialects(t, testPurgeRateLimited) }

func testPurgeRateLimited(t *testing.T, dsn string) {
	ctx := context.Background()
	po := newPurgeOrigin(t, dsn)
	for i := range purgesPerMinute {
		if rec := po.post("blog", sign(t, po.alice, po.purge(100+i))); rec.Code != http.StatusOK {
			t.Fatalf("purge %d: HTTP %d %s", i, rec.Code, rec.Body)
		}
	}
	body := sign(t, po.alice, po.purge(1))
	rec := po.post("blog", body)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("HTTP %d %s, want 429", rec.Code, rec.Body)
	}
	secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > originapi.PurgeSkew {
		t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
	}
	_, last, _ := po.changes.state()
	woken := make(chan *identity.Envelope, 1)
	go func() {
		env, err := po.NameChanges(ctx, last, 0, originapi.MaxNameChangesWait)
		if err != nil {
			t.Error(err)
		}
		woken <- env
	}()
	po.now = po.now.Add(time.Duration(secs) * time.Second)
	if rec := po.post("blog", body); rec.Code != http.StatusOK {
		t.Fatalf("after Retry-After: HTTP %d %s", rec.Code, rec.Body)
	}
	select {
	case env := <-woken:
		if p := openChanges(t, po.Origin, env); len(p.Changes) != 1 || p.Changes[0].Kind != originapi.ChangePurge {
			t.Fatalf("woken with %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a reader waiting at the last change was not woken by the purge")
	}
	if got := testutil.ToFloat64(po.metrics.nameChanges.WithLabelValues(originapi.ChangePurge)); got != purgesPerMinute+1 {
		t.Errorf("topcdn_origin_name_changes_total{kind=purge} = %v, want %d", got, purgesPerMinute+1)
	}
}

// TestPurgeLimits: a name gets purgesPerMinute at once, then one every
// 6 s, and at most about purgesPerDay a day however spread; an undone
// purge gives its tokens back; full buckets are forgotten.
func TestPurgeLimits(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newPurgeLimits()
	for i := range purgesPerMinute {
		if _, wait := l.take("blog", t0); wait != 0 {
			t.Fatalf("purge %d at once: wait %s", i, wait)
		}
	}
	if _, wait := l.take("blog", t0); wait != 6*time.Second {
		t.Fatalf("purge %d at once: wait %s, want 6s", purgesPerMinute+1, wait)
	}
	if _, wait := l.take("docs", t0); wait != 0 {
		t.Fatalf("another name: wait %s", wait)
	}
	undo, wait := l.take("blog", t0.Add(6*time.Second))
	if wait != 0 {
		t.Fatalf("after 6 s: wait %s", wait)
	}
	undo()
	if _, wait := l.take("blog", t0.Add(6*time.Second)); wait != 0 {
		t.Fatalf("after an undone purge: wait %s", wait)
	}

	// One purge a minute, below the minute's rate: the day's bucket
	// runs out after its 200 and what refills meanwhile.
	l = newPurgeLimits()
	at := t0
	n := 0
	for ; n < 2*purgesPerDay; n++ {
		if _, wait := l.take("blog", at); wait != 0 {
			if wait < time.Minute {
				t.Fatalf("purge %d: wait %s, want the day's refill (7.2 min)", n, wait)
			}
			break
		}
		at = at.Add(time.Minute)
	}
	if n < purgesPerDay || n > purgesPerDay+purgesPerDay/5 {
		t.Fatalf("%d purges a minute apart before a refusal; want about %d", n, purgesPerDay)
	}
	l.prune(at)
	if len(l.names) != 1 {
		t.Fatal("a bucket in use was forgotten")
	}
	l.prune(at.Add(24 * time.Hour))
	if len(l.names) != 0 {
		t.Fatal("a full bucket was kept")
	}
}
