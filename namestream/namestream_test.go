package namestream_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/namestream"
	"github.com/topcdn/topcdn/originapi"
)

// fakeOrigin serves a name-change stream from memory, signed by key,
// with the origin's long-poll semantics: no since gives the start page,
// a since below the oldest kept change gives a reset, and a poll with
// nothing new waits (briefly) for one.
type fakeOrigin struct {
	t   *testing.T
	key *identity.Key

	mu      sync.Mutex
	changes []originapi.NameChange // by ID
	oldest  int64                  // IDs below are trimmed
	down    bool                   // answer 503
	pastEnd bool                   // a since past the last change gets a reset
	wake    chan struct{}
	// tamper, if set, rewrites a page before it is signed; sign, if set,
	// signs it instead of key.
	tamper func(*originapi.NameChanges)
	sign   *identity.Key
}

func newFakeOrigin(t *testing.T) (*fakeOrigin, *httptest.Server) {
	o := &fakeOrigin{t: t, key: testkit.Key(t, 1), wake: make(chan struct{}), oldest: 1}
	srv := httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(srv.Close)
	return o, srv
}

func (o *fakeOrigin) append(c originapi.NameChange) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	c.ID = int64(len(o.changes)) + 1
	c.At = time.Now().UTC()
	o.changes = append(o.changes, c)
	close(o.wake)
	o.wake = make(chan struct{})
	return c.ID
}

func (o *fakeOrigin) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/names/changes" {
		http.NotFound(w, r)
		return
	}
	deadline := time.After(300 * time.Millisecond)
	for {
		o.mu.Lock()
		if o.down {
			o.mu.Unlock()
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		last := int64(len(o.changes))
		page := originapi.NameChanges{Since: last, To: last, Last: last, Changes: []originapi.NameChange{}}
		if s := r.URL.Query().Get("since"); s != "" {
			since, _ := strconv.ParseInt(s, 10, 64)
			page.Since, page.To = since, since
			if since < o.oldest-1 || (o.pastEnd && since > last) {
				page.Reset, page.To = true, last
			} else {
				for _, c := range o.changes[min(since, last):] {
					page.Changes = append(page.Changes, c)
					page.To = c.ID
				}
			}
		}
		wake := o.wake
		tamper, signer := o.tamper, o.sign
		o.mu.Unlock()
		if len(page.Changes) > 0 || page.Reset {
			if tamper != nil {
				tamper(&page)
			}
			if signer == nil {
				signer = o.key
			}
			env, err := signer.Sign(originapi.TypeNameChanges, page)
			if err != nil {
				o.t.Error(err)
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(env)
			return
		}
		select {
		case <-wake:
		case <-deadline:
			env, _ := o.key.Sign(originapi.TypeNameChanges, page)
			_ = json.NewEncoder(w).Encode(env)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// site is a publisher's key and human name.
type site struct {
	key  *identity.Key
	name string
}

func (s site) ipns() string { return ipns.NameFromPeer(s.key.ID).String() }

// record returns a change moving s to root at seq, its record signed by
// signer for the human name human.
func (s site) record(t testing.TB, signer *identity.Key, human string, root cid.Cid, seq uint64) originapi.NameChange {
	raw := testkit.IPNSRecord(t, signer, root, seq, time.Now().Add(time.Hour),
		ipns.WithMetadata(map[string]any{originapi.RecordNameKey: human}))
	return originapi.NameChange{Kind: originapi.ChangeRecord, Name: s.name, IPNS: s.ipns(), Record: raw}
}

func (s site) purge(t testing.TB, signer *identity.Key, paths ...string) originapi.NameChange {
	env, err := originapi.SignPurge(signer, s.name, paths)
	if err != nil {
		t.Fatal(err)
	}
	return originapi.NameChange{Kind: originapi.ChangePurge, Name: s.name, IPNS: s.ipns(), Purge: env}
}

// follow runs a follower of srv until the test ends; its applied changes
// arrive on the returned channel.
func follow(t *testing.T, o *fakeOrigin, srv *httptest.Server, cursor *namestream.Cursor, reg prometheus.Registerer) (<-chan namestream.Change, *namestream.Follower) {
	t.Helper()
	got := make(chan namestream.Change, 64)
	var f *namestream.Follower
	var err error
	f, err = namestream.New(namestream.Config{
		Origin:     srv.URL,
		OriginIDs:  func(context.Context) ([]peer.ID, error) { return []peer.ID{o.key.ID}, nil },
		Cursor:     cursor,
		Wait:       time.Second,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
		Metrics:    namestream.NewMetrics(reg, "test", func() bool { return f.Healthy() }),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx, func(_ context.Context, c namestream.Change) { got <- c })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return got, f
}

func next(t *testing.T, got <-chan namestream.Change) namestream.Change {
	t.Helper()
	select {
	case c := <-got:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change applied within 10 s")
		return namestream.Change{}
	}
}

// waitCursor waits until the cursor reaches id.
func waitCursor(t *testing.T, c *namestream.Cursor, id int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if at, ok := c.ID(); ok && at >= id {
			return
		}
		if time.Now().After(deadline) {
			at, _ := c.ID()
			t.Fatalf("cursor at %d, want %d", at, id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFollowAppliesVerifiedChanges(t *testing.T) {
	o, srv := newFakeOrigin(t)
	blog := site{key: testkit.Key(t, 2), name: "blog"}
	root := testCID("v1")
	// A change made before the follower starts is not replayed: it
	// starts at the stream's end.
	o.append(blog.record(t, blog.key, "blog", root, 1))
	cursor := new(namestream.Cursor)
	got, f := follow(t, o, srv, cursor, nil)
	waitCursor(t, cursor, 1)

	root2 := testCID("v2")
	id := o.append(blog.record(t, blog.key, "blog", root2, 2))
	c := next(t, got)
	if c.ID != id || c.Kind != namestream.Record || c.Name != "blog" || c.Seq != 2 || !c.Root.Equals(root2) || c.IPNS.String() != blog.ipns() {
		t.Fatalf("applied %+v, want record %d of blog at seq 2 → %s", c, id, root2)
	}
	pid := o.append(blog.purge(t, blog.key, "/about.html"))
	c = next(t, got)
	if c.ID != pid || c.Kind != namestream.Purge || len(c.Purge.Paths) != 1 || c.Purge.Paths[0] != "/about.html" {
		t.Fatalf("applied %+v, want the purge of /about.html", c)
	}
	if !f.Healthy() {
		t.Error("follower not healthy after good pages")
	}
}

// TestFollowRejects: changes that fail their own checks are skipped (the
// cursor moves on), pages that fail the stream's are dropped whole (the
// cursor holds, and the good change after them still arrives).
func TestFollowRejects(t *testing.T) {
	blog := site{key: testkit.Key(t, 2), name: "blog"}
	other := testkit.Key(t, 9)
	root := testCID("forged")
	tests := []struct {
		name    string
		change  func(t *testing.T) originapi.NameChange
		tamper  func(*originapi.NameChanges)
		signer  *identity.Key
		skipped bool   // the change is skipped, the cursor moves past it
		metric  string // the pages_total result counted, for a dropped page
	}{
		{name: "record signed by another key", skipped: true,
			change: func(t *testing.T) originapi.NameChange { return blog.record(t, other, "blog", root, 9) }},
		{name: "record signed for another human name", skipped: true,
			change: func(t *testing.T) originapi.NameChange { return blog.record(t, blog.key, "docs", root, 9) }},
		{name: "record streamed under another IPNS name", skipped: true,
			change: func(t *testing.T) originapi.NameChange {
				c := blog.record(t, blog.key, "blog", root, 9)
				c.IPNS = ipns.NameFromPeer(other.ID).String()
				return c
			}},
		{name: "purge signed by another key", skipped: true,
			change: func(t *testing.T) originapi.NameChange {
				c := blog.purge(t, other)
				return c
			}},
		{name: "purge of another name", skipped: true,
			change: func(t *testing.T) originapi.NameChange {
				c := blog.purge(t, blog.key)
				c.Name = "docs"
				return c
			}},
		{name: "unknown kind", skipped: true,
			change: func(t *testing.T) originapi.NameChange {
				c := blog.record(t, blog.key, "blog", root, 9)
				c.Kind = "delete"
				return c
			}},
		{name: "page signed by another key", signer: other, metric: "bad_signature",
			change: func(t *testing.T) originapi.NameChange { return blog.record(t, blog.key, "blog", root, 9) }},
		{name: "page after another cursor", metric: "bad_page",
			tamper: func(p *originapi.NameChanges) { p.Since-- },
			change: func(t *testing.T) originapi.NameChange { return blog.record(t, blog.key, "blog", root, 9) }},
		{name: "IDs not increasing", metric: "bad_page",
			tamper: func(p *originapi.NameChanges) { p.Changes = append(p.Changes, p.Changes[0]) },
			change: func(t *testing.T) originapi.NameChange { return blog.record(t, blog.key, "blog", root, 9) }},
		{name: "to short of the last change", metric: "bad_page",
			tamper: func(p *originapi.NameChanges) { p.To-- },
			change: func(t *testing.T) originapi.NameChange { return blog.record(t, blog.key, "blog", root, 9) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, srv := newFakeOrigin(t)
			reg := prometheus.NewRegistry()
			cursor := new(namestream.Cursor)
			got, _ := follow(t, o, srv, cursor, reg)
			waitCursor(t, cursor, 0)
			o.mu.Lock()
			o.tamper, o.sign = tt.tamper, tt.signer
			o.mu.Unlock()
			bad := o.append(tt.change(t))
			if tt.skipped {
				waitCursor(t, cursor, bad)
			} else {
				deadline := time.Now().Add(10 * time.Second)
				for pagesTotal(t, reg, tt.metric) == 0 {
					if time.Now().After(deadline) {
						t.Fatalf("no page counted %s", tt.metric)
					}
					time.Sleep(5 * time.Millisecond)
				}
				if at, _ := cursor.ID(); at != 0 {
					t.Fatalf("cursor moved to %d past a dropped page", at)
				}
				o.mu.Lock()
				o.tamper, o.sign = nil, nil
				o.mu.Unlock()
			}
			good := o.append(blog.record(t, blog.key, "blog", testCID("good"), 10))
			c := next(t, got)
			if !tt.skipped {
				// The dropped page's change is read again, untampered.
				if c.ID != bad {
					t.Fatalf("first applied change %d, want the re-read %d", c.ID, bad)
				}
				c = next(t, got)
			}
			if c.ID != good || c.Seq != 10 {
				t.Fatalf("applied %+v, want change %d (seq 10)", c, good)
			}
		})
	}
}

// pagesTotal returns the pages_total count of result.
func pagesTotal(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "topcdn_test_name_stream_pages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// cid returns a CID of raw bytes s.
func testCID(s string) cid.Cid {
	h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

// TestFollowResumes: a follower cut off from the origin while changes are
// made gets every one of them, in order, once it reaches the origin again.
func TestFollowResumes(t *testing.T) {
	o, srv := newFakeOrigin(t)
	blog := site{key: testkit.Key(t, 2), name: "blog"}
	cursor := new(namestream.Cursor)
	got, f := follow(t, o, srv, cursor, nil)
	waitCursor(t, cursor, 0)
	o.mu.Lock()
	o.down = true
	o.mu.Unlock()
	srv.CloseClientConnections()
	var ids []int64
	for seq := uint64(1); seq <= 3; seq++ {
		ids = append(ids, o.append(blog.record(t, blog.key, "blog", testCID(strconv.Itoa(int(seq))), seq)))
	}
	time.Sleep(100 * time.Millisecond) // a few failed polls
	o.mu.Lock()
	o.down = false
	o.mu.Unlock()
	for i, id := range ids {
		if c := next(t, got); c.ID != id || c.Seq != uint64(i+1) {
			t.Fatalf("applied %d (seq %d), want %d (seq %d)", c.ID, c.Seq, id, i+1)
		}
	}
	if !f.Healthy() {
		t.Error("follower not healthy after it caught up")
	}
}

// TestFollowReset: a follower whose cursor is older than what the origin
// keeps is told to drop everything, and goes on from the stream's end.
func TestFollowReset(t *testing.T) {
	o, srv := newFakeOrigin(t)
	blog := site{key: testkit.Key(t, 2), name: "blog"}
	for seq := uint64(1); seq <= 5; seq++ {
		o.append(blog.record(t, blog.key, "blog", testCID(strconv.Itoa(int(seq))), seq))
	}
	o.mu.Lock()
	o.oldest = 4 // 1–3 trimmed
	o.mu.Unlock()
	cursor := new(namestream.Cursor)
	cursor.Set(1) // a follower that stopped after change 1
	got, _ := follow(t, o, srv, cursor, nil)
	if c := next(t, got); c.Kind != namestream.Reset || c.ID != 5 {
		t.Fatalf("applied %+v, want a reset to 5", c)
	}
	id := o.append(blog.record(t, blog.key, "blog", testCID("6"), 6))
	if c := next(t, got); c.ID != id {
		t.Fatalf("applied %d after the reset, want %d", c.ID, id)
	}
}

// TestFollowResetPastTheEnd: a cursor past the stream's end (the origin's
// database started over) is reset to the end too.
func TestFollowResetPastTheEnd(t *testing.T) {
	o, srv := newFakeOrigin(t)
	blog := site{key: testkit.Key(t, 2), name: "blog"}
	o.append(blog.record(t, blog.key, "blog", testCID("1"), 1))
	o.mu.Lock()
	o.pastEnd = true
	o.mu.Unlock()
	cursor := new(namestream.Cursor)
	cursor.Set(40) // a follower of the origin before it started over
	got, _ := follow(t, o, srv, cursor, nil)
	if c := next(t, got); c.Kind != namestream.Reset || c.ID != 1 {
		t.Fatalf("applied %+v, want a reset to 1", c)
	}
	id := o.append(blog.record(t, blog.key, "blog", testCID("2"), 2))
	if c := next(t, got); c.ID != id {
		t.Fatalf("applied %d after the reset, want %d", c.ID, id)
	}
}

func TestVerifyPurgeWindow(t *testing.T) {
	blog := site{key: testkit.Key(t, 2), name: "blog"}
	c := blog.purge(t, blog.key, "/docs/")
	now := time.Now()
	tests := []struct {
		name string
		now  time.Time
		ok   bool
	}{
		{"fresh", now, true},
		{"a day old", now.Add(24 * time.Hour), true},
		{"older than the stream keeps", now.Add(namestream.PurgeWindow + time.Minute), false},
		{"from the future", now.Add(-originapi.PurgeSkew - time.Minute), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := namestream.Verify(c, tt.now)
			if (err == nil) != tt.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
