package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// openChanges opens a page of the name-change stream, which must be
// signed by o's key.
func openChanges(t testing.TB, o *Origin, env *identity.Envelope) *originapi.NameChanges {
	t.Helper()
	var p originapi.NameChanges
	signer, err := env.Open(originapi.TypeNameChanges, &p)
	if err != nil || signer != o.ID().ID {
		t.Fatalf("page signed by %s (%v), want the origin %s", signer, err, o.ID().ID)
	}
	return &p
}

// getChanges asks srv for a page of the stream with query, and returns the
// status, the page if 200, and the headers.
func getChanges(t testing.TB, ctx context.Context, o *Origin, srv *httptest.Server, query string) (int, *originapi.NameChanges, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/names/changes"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, resp.Header
	}
	var env identity.Envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, openChanges(t, o, &env), resp.Header
}

// fakeChanges appends a record change for each size, its record that many
// bytes (not a record: the stream does not read what it carries), taken at
// at, as putRecord would.
func fakeChanges(t testing.TB, o *Origin, at time.Time, sizes ...int) {
	t.Helper()
	for i, size := range sizes {
		id, err := origindb.AppendChange(context.Background(), o.db, originapi.NameChange{Kind: originapi.ChangeRecord,
			Name: "blog", IPNS: "k51", Record: bytes.Repeat([]byte{byte(i)}, size), At: at})
		if err != nil {
			t.Fatal(err)
		}
		o.changeCommitted(id, originapi.ChangeRecord)
	}
}

// TestNameChangesPages: the start page, pages bounded by count and bytes
// (a change over the bytes alone on its page), an up-to-date reader's
// empty page, a cursor past the end reset, and 400 for bad parameters.
func TestNameChangesPages(t *testing.T) { pgtest.Dialects(t, testNameChangesPages) }

func testNameChangesPages(t *testing.T, dsn string) {
	ctx := context.Background()
	o := newTestOriginOn(t, dsn)
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	var sizes []int
	for range 70 {
		sizes = append(sizes, 100)
	}
	// 71-73 fill a page in twos; 74 alone is over the page's bytes; 75 is small.
	sizes = append(sizes, 100<<10, 100<<10, 100<<10, originapi.MaxNameChangesBytes+1, 100)
	fakeChanges(t, o, time.Now(), sizes...)

	tests := []struct {
		name      string
		query     string
		wantCode  int
		wantSince int64
		wantFirst int64 // first change's ID; 0: none
		wantTo    int64
		wantReset bool
	}{
		{name: "start page", query: "", wantCode: 200, wantSince: 75, wantTo: 75},
		{name: "start page, empty since", query: "?since=&wait=30", wantCode: 200, wantSince: 75, wantTo: 75},
		{name: "from the start", query: "?since=0", wantCode: 200, wantFirst: 1, wantTo: originapi.MaxNameChangesPage},
		{name: "limit", query: "?since=10&limit=5", wantCode: 200, wantSince: 10, wantFirst: 11, wantTo: 15},
		{name: "count up to the bytes", query: "?since=69", wantCode: 200, wantSince: 69, wantFirst: 70, wantTo: 72},
		{name: "bytes", query: "?since=72", wantCode: 200, wantSince: 72, wantFirst: 73, wantTo: 73},
		{name: "one change over the bytes", query: "?since=73", wantCode: 200, wantSince: 73, wantFirst: 74, wantTo: 74},
		{name: "the last", query: "?since=74&wait=30", wantCode: 200, wantSince: 74, wantFirst: 75, wantTo: 75},
		{name: "up to date", query: "?since=75", wantCode: 200, wantSince: 75, wantTo: 75},
		{name: "up to date, heartbeat after the wait", query: "?since=75&wait=1", wantCode: 200, wantSince: 75, wantTo: 75},
		{name: "past the end", query: "?since=90", wantCode: 200, wantSince: 90, wantTo: 75, wantReset: true},
		{name: "negative since", query: "?since=-1", wantCode: 400},
		{name: "since not a number", query: "?since=x", wantCode: 400},
		{name: "limit 0", query: "?since=0&limit=0", wantCode: 400},
		{name: "limit over the page", query: "?since=0&limit=65", wantCode: 400},
		{name: "wait over the most", query: "?since=0&wait=31", wantCode: 400},
		{name: "negative wait", query: "?since=0&wait=-1", wantCode: 400},
		{name: "wait with a unit", query: "?since=0&wait=5s", wantCode: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, p, _ := getChanges(t, ctx, o, srv, tc.query)
			if code != tc.wantCode {
				t.Fatalf("HTTP %d, want %d", code, tc.wantCode)
			}
			if code != http.StatusOK {
				return
			}
			if p.Since != tc.wantSince || p.To != tc.wantTo || p.Last != 75 || p.Reset != tc.wantReset {
				t.Fatalf("page since %d to %d last %d reset %v; want %d to %d last 75 reset %v",
					p.Since, p.To, p.Last, p.Reset, tc.wantSince, tc.wantTo, tc.wantReset)
			}
			if tc.wantFirst == 0 {
				if len(p.Changes) != 0 {
					t.Fatalf("%d changes, want none", len(p.Changes))
				}
				return
			}
			if n := int(tc.wantTo - tc.wantFirst + 1); len(p.Changes) != n {
				t.Fatalf("%d changes, want %d", len(p.Changes), n)
			}
			for i, c := range p.Changes {
				id := tc.wantFirst + int64(i)
				if c.ID != id || c.Kind != originapi.ChangeRecord || len(c.Record) != sizes[id-1] {
					t.Errorf("change %d: ID %d, %s of %d bytes; want ID %d of %d bytes", i, c.ID, c.Kind, len(c.Record), id, sizes[id-1])
				}
			}
		})
	}
}

// TestNameChangesReset: once trimmed, a reader behind the oldest change
// kept is told to start over (Reset) at the last change, even if it read
// a page before the trim; one just before it is not. Trimming keeps the
// last changes however old.
func TestNameChangesReset(t *testing.T) { pgtest.Dialects(t, testNameChangesReset) }

func testNameChangesReset(t *testing.T, dsn string) {
	ctx := context.Background()
	o := newTestOriginOn(t, dsn)
	o.keepChanges = 2
	fakeChanges(t, o, time.Now().Add(-2*DefaultNameChangesRetention), 10, 10, 10, 10, 10)
	// A page read before the trim is not served after it.
	if env, err := o.NameChanges(ctx, 0, 0, 0); err != nil || len(openChanges(t, o, env).Changes) != 5 {
		t.Fatalf("before the trim: %v", err)
	}
	if err := o.trimNameChanges(ctx); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		since     int64
		wantReset bool
		wantTo    int64
		wantN     int
	}{
		{since: 0, wantReset: true, wantTo: 5},
		{since: 2, wantReset: true, wantTo: 5},
		{since: 3, wantTo: 5, wantN: 2},
		{since: 4, wantTo: 5, wantN: 1},
	}
	for _, tc := range tests {
		env, err := o.NameChanges(ctx, tc.since, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		p := openChanges(t, o, env)
		if p.Since != tc.since || p.Reset != tc.wantReset || p.To != tc.wantTo || p.Last != 5 || len(p.Changes) != tc.wantN {
			t.Errorf("since %d: %+v; want reset %v, to %d, %d changes", tc.since, p, tc.wantReset, tc.wantTo, tc.wantN)
		}
	}
}

// TestNameChangesStreamsBoundNames: a claim, and a move of a bound name by
// a routing put, are streamed with the record as stored; a record of a
// key bound to no name, a record sent again and a refused record are not.
func TestNameChangesStreamsBoundNames(t *testing.T) {
	pgtest.Dialects(t, testNameChangesStreamsBoundNames)
}

func testNameChangesStreamsBoundNames(t *testing.T, dsn string) {
	ctx := context.Background()
	o := newTestOriginOn(t, dsn)
	d := newTestDAG(t, "stream", 2)
	if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
		t.Fatal(err)
	}
	alice, bob := testkit.Key(t, 1), testkit.Key(t, 2)
	aliceName, bobName := ipns.NameFromPeer(alice.ID), ipns.NameFromPeer(bob.ID)
	future := time.Now().Add(time.Hour)
	claim := record(t, alice, d.root, 1, future, "blog")
	move := record(t, alice, d.root, 2, future, "")
	steps := []struct {
		name   string
		do     func() error
		stream []byte // the record streamed; nil: none
	}{
		{"claim", func() error { _, err := o.ClaimName(ctx, "blog", aliceName, claim); return err }, claim},
		{"claim again", func() error { _, err := o.ClaimName(ctx, "blog", aliceName, claim); return err }, nil},
		{"routing put of a bound key", func() error { _, err := o.PutRecord(ctx, aliceName, move); return err }, move},
		{"unbound key", func() error {
			_, err := o.PutRecord(ctx, bobName, record(t, bob, d.root, 1, future, ""))
			return err
		}, nil},
		{"refused", func() error {
			if _, err := o.PutRecord(ctx, aliceName, record(t, alice, d.root, 1, future, "")); err == nil {
				t.Error("an old sequence was taken")
			}
			return nil
		}, nil},
	}
	var since int64
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		env, err := o.NameChanges(ctx, since, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		p := openChanges(t, o, env)
		if st.stream == nil {
			if len(p.Changes) != 0 {
				t.Fatalf("%s: streamed %+v", st.name, p.Changes)
			}
			continue
		}
		if len(p.Changes) != 1 {
			t.Fatalf("%s: %d changes streamed, want 1", st.name, len(p.Changes))
		}
		c := p.Changes[0]
		if c.ID != since+1 || c.Kind != originapi.ChangeRecord || c.Name != "blog" || c.IPNS != aliceName.String() ||
			!bytes.Equal(c.Record, st.stream) || c.Purge != nil || c.At.IsZero() {
			t.Fatalf("%s: streamed %+v", st.name, c)
		}
		since = c.ID
	}
	if got := testutil.ToFloat64(o.metrics.nameChanges.WithLabelValues(originapi.ChangeRecord)); got != 2 {
		t.Errorf("topcdn_origin_name_changes_total{kind=record} = %v, want 2", got)
	}
}

// TestNameChangesWake: readers waiting at the last change are answered as
// soon as a name moves, with the change, all with the same page; readers
// at one cursor share one signed page.
func TestNameChangesWake(t *testing.T) {
	ctx := context.Background()
	o := newTestOrigin(t)
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	d := newTestDAG(t, "wake", 1)
	if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
		t.Fatal(err)
	}
	a, err := o.NameChanges(ctx, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := o.NameChanges(ctx, 0, 0, 0); err != nil || b != a {
		t.Fatalf("two readers at one cursor got two pages (%v)", err)
	}

	const readers = 3
	type answer struct {
		code int
		body []byte
	}
	answers := make(chan answer, readers)
	for range readers {
		go func() {
			resp, err := http.Get(srv.URL + "/api/v1/names/changes?since=0&wait=30")
			if err != nil {
				answers <- answer{}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- answer{resp.StatusCode, b}
		}()
	}
	testkit.WaitFor(t, 10*time.Second, "the readers to wait", func() bool {
		return testutil.ToFloat64(o.metrics.nameWaiters) == readers
	})
	key := testkit.Key(t, 3)
	start := time.Now()
	if _, err := o.ClaimName(ctx, "wake", ipns.NameFromPeer(key.ID), record(t, key, d.root, 1, time.Now().Add(time.Hour), "wake")); err != nil {
		t.Fatal(err)
	}
	var first []byte
	for range readers {
		var an answer
		select {
		case an = <-answers:
		case <-time.After(10 * time.Second):
			t.Fatal("a waiting reader was not woken by the claim")
		}
		if an.code != http.StatusOK {
			t.Fatalf("HTTP %d", an.code)
		}
		if first == nil {
			first = an.body
		} else if !bytes.Equal(an.body, first) {
			t.Fatal("readers at one cursor got different pages")
		}
		var env identity.Envelope
		if err := json.Unmarshal(an.body, &env); err != nil {
			t.Fatal(err)
		}
		if p := openChanges(t, o, &env); len(p.Changes) != 1 || p.Changes[0].Name != "wake" || p.To != 1 {
			t.Fatalf("woken with %+v", p)
		}
	}
	// Woken, not timed out: well before the wait of 30 s ends.
	if waited := time.Since(start); waited >= originapi.MaxNameChangesWait/2 {
		t.Fatalf("readers answered after %s", waited)
	}
	testkit.WaitFor(t, 10*time.Second, "the readers to be gone", func() bool {
		return testutil.ToFloat64(o.metrics.nameWaiters) == 0
	})
}

// TestNameChangesWaiterCaps: readers beyond Config.MaxNameWaiters, or
// beyond Config.MaxNameWaitersPerIP from one address, are refused with 503
// and Retry-After; once readers leave, others are taken again.
func TestNameChangesWaiterCaps(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		max  int // readers taken from 127.0.0.1
	}{
		{name: "in all", cfg: Config{MaxNameWaiters: 2}, max: 2},
		{name: "per address", cfg: Config{MaxNameWaitersPerIP: 3}, max: 3},
		{name: "default per address", cfg: Config{}, max: DefaultMaxNameWaitersPerIP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.DataDir = t.TempDir()
			o, err := New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			srv := httptest.NewServer(o.Handler())
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{}, tc.max)
			for range tc.max {
				go func() {
					defer func() { done <- struct{}{} }()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/names/changes?since=0&wait=30", nil)
					if resp, err := http.DefaultClient.Do(req); err == nil {
						resp.Body.Close()
					}
				}()
			}
			testkit.WaitFor(t, 10*time.Second, "the readers to wait", func() bool {
				return testutil.ToFloat64(o.metrics.nameWaiters) == float64(tc.max)
			})
			code, _, h := getChanges(t, context.Background(), o, srv, "?since=0")
			if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
				t.Fatalf("reader %d: HTTP %d, Retry-After %q; want 503 with Retry-After", tc.max+1, code, h.Get("Retry-After"))
			}
			cancel()
			for range tc.max {
				<-done
			}
			testkit.WaitFor(t, 10*time.Second, "the readers to be gone", func() bool {
				return testutil.ToFloat64(o.metrics.nameWaiters) == 0
			})
			if code, _, _ := getChanges(t, context.Background(), o, srv, "?since=0"); code != http.StatusOK {
				t.Fatalf("after the readers left: HTTP %d", code)
			}
		})
	}
}

// TestParseNameChangesQuery: the defaults, and the bounds of each
// parameter.
func TestParseNameChangesQuery(t *testing.T) {
	tests := []struct {
		query     string
		shouldErr bool
		since     int64
		limit     int
		wait      time.Duration
	}{
		{query: "", since: -1, limit: originapi.MaxNameChangesPage},
		{query: "since=7&limit=1&wait=30", since: 7, limit: 1, wait: originapi.MaxNameChangesWait},
		{query: "since=0&wait=0", since: 0, limit: originapi.MaxNameChangesPage},
		{query: "since=9223372036854775807", since: 1<<63 - 1, limit: originapi.MaxNameChangesPage},
		{query: "since=9223372036854775808", shouldErr: true},
		{query: "since=1.5", shouldErr: true},
		{query: "since=%2B1", since: 1, limit: originapi.MaxNameChangesPage},
		{query: "limit=64", since: -1, limit: 64},
		{query: "limit=-3", shouldErr: true},
		{query: "wait=0x10", shouldErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			since, limit, wait, err := parseNameChangesQuery(q)
			if (err != nil) != tc.shouldErr {
				t.Fatalf("err = %v, want error: %v", err, tc.shouldErr)
			}
			if err == nil && (since != tc.since || limit != tc.limit || wait != tc.wait) {
				t.Fatalf("since %d, limit %d, wait %s; want %d, %d, %s", since, limit, wait, tc.since, tc.limit, tc.wait)
			}
		})
	}
}

// TestRunTrimsNameChanges: Run trims the stream when it starts, and
// returns when its context ends.
func TestRunTrimsNameChanges(t *testing.T) { pgtest.Dialects(t, testRunTrimsNameChanges) }

func testRunTrimsNameChanges(t *testing.T, dsn string) {
	o := newTestOriginOn(t, dsn)
	o.keepChanges = 1
	fakeChanges(t, o, time.Now().Add(-2*DefaultNameChangesRetention), 10, 10, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.Run(ctx)
	}()
	testkit.WaitFor(t, 10*time.Second, "the stream to be trimmed", func() bool {
		oldest, last, _ := o.changes.state()
		return oldest == 3 && last == 3
	})
	cancel()
	<-done
}

// TestNameChangesEndWaits: once the origin shuts down, a parked reader
// gets its (empty) page at once, and so does every later one, so a
// graceful shutdown does not wait out the long-polls.
func TestNameChangesEndWaits(t *testing.T) {
	o := newTestOrigin(t)
	ctx := context.Background()
	done := make(chan *originapi.NameChanges, 1)
	go func() {
		env, err := o.NameChanges(ctx, 0, 0, originapi.MaxNameChangesWait)
		if err != nil {
			t.Error(err)
		}
		done <- openChanges(t, o, env)
	}()
	time.Sleep(50 * time.Millisecond) // parked
	o.EndWaits()
	select {
	case p := <-done:
		if len(p.Changes) != 0 || p.Since != 0 {
			t.Fatalf("page %+v, want an empty page after 0", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a parked reader still waits 10 s after EndWaits")
	}
	start := time.Now()
	if _, err := o.NameChanges(ctx, 0, 0, originapi.MaxNameChangesWait); err != nil || time.Since(start) > 10*time.Second {
		t.Fatalf("a reader after EndWaits: %v after %s", err, time.Since(start))
	}
}

// TestNameChangesAcrossOrigins: two origins share a PostgreSQL database; a
// reader long-polling one of them is answered with a change the other
// appended, which wakes no one in the first process.
func TestNameChangesAcrossOrigins(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pgtest.DSN(t)
	var origins [2]*Origin
	for i := range origins {
		o, err := New(ctx, Config{DataDir: t.TempDir(), DB: dsn})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		go o.Run(ctx)
		origins[i] = o
	}
	a, b := origins[0], origins[1]
	start := openChanges(t, b, mustChanges(t, b, -1))
	got := make(chan *identity.Envelope, 1)
	go func() {
		env, _ := b.NameChanges(ctx, start.To, 0, 20*time.Second)
		got <- env
	}()
	time.Sleep(100 * time.Millisecond) // the reader waits
	fakeChanges(t, a, time.Now(), 10)
	select {
	case env := <-got:
		if env == nil {
			t.Fatal("no page")
		}
		if p := openChanges(t, b, env); len(p.Changes) != 1 || p.Changes[0].ID != start.To+1 {
			t.Fatalf("page %+v, want the change origin A appended", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a change appended through another origin did not wake the reader")
	}
}

// mustChanges returns o's page of the stream after since, at once.
func mustChanges(t testing.TB, o *Origin, since int64) *identity.Envelope {
	t.Helper()
	env, err := o.NameChanges(context.Background(), since, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return env
}
