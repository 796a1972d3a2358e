package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// The name-change stream: every new record of a human name (putRecord)
// and every purge (Purge) is appended to table name_changes in the
// transaction that makes it, and served as origin-signed pages to edges
// and the router, which long-poll GET /api/v1/names/changes?since=ID. A
// record stored for an IPNS name bound to no human name is not streamed:
// anyone may send one for any new key, and every edge would do the work.

const (
	// keepNameChanges is how many of the last changes trimming always
	// keeps, whatever their age.
	keepNameChanges = 10_000
	// nameChangesTrimInterval is how often Run trims the stream.
	nameChangesTrimInterval = time.Hour
	// nameChangesPoll is how often Run reads the stream's last change
	// from a database other origins share: their appends wake no reader
	// here.
	nameChangesPoll = 250 * time.Millisecond
	// maxMemoPages and maxMemoBytes bound the signed pages memoized for
	// the stream's current last change.
	maxMemoPages, maxMemoBytes = 64, 16 << 20
	// waitersRetry is the Retry-After of a request refused for too many
	// readers on the stream.
	waitersRetry = 5 * time.Second
)

// nameFeed is the in-memory side of the name-change stream: the IDs it
// spans, a broadcast channel closed at each append, the signed pages
// memoized for the current last ID, and the requests on it.
type nameFeed struct {
	mu      sync.Mutex
	last    int64         // the last change committed
	oldest  int64         // the oldest change kept; last+1 if none
	wake    chan struct{} // closed, and replaced, when a change commits
	memo    map[pageKey]*signedPage
	memoed  int    // bytes in memo
	memoGen uint64 // counts the memos dropped

	waiters int            // requests on the stream
	perIP   map[string]int // the same, by client IP

	ending  chan struct{} // closed by EndWaits
	endOnce sync.Once
}

// pageKey names a page: what it holds depends on nothing else while the
// stream's oldest ID stays put (a trim clears the memo).
type pageKey struct {
	since, last int64
	limit       int
}

// signedPage is a page of the stream signed with the origin's key, and its
// JSON encoding, built once for all the readers that ask for it.
type signedPage struct {
	done chan struct{} // closed once env, raw and err are set
	env  *identity.Envelope
	raw  []byte
	err  error
}

func newNameFeed(oldest, last int64) *nameFeed {
	return &nameFeed{last: last, oldest: oldest, wake: make(chan struct{}), memo: map[pageKey]*signedPage{}, perIP: map[string]int{},
		ending: make(chan struct{})}
}

// state returns the span of the stream and the channel the next append
// closes.
func (f *nameFeed) state() (oldest, last int64, wake <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.oldest, f.last, f.wake
}

// appended records that change id committed and wakes every waiter. It is
// called after the commit, so a woken reader finds the change.
func (f *nameFeed) appended(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id > f.last {
		f.last = id
		f.dropMemoLocked()
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// caughtUp records that the database's last change is last, appended by
// another origin sharing it if it is past the feed's, and then wakes every
// waiter.
func (f *nameFeed) caughtUp(last int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if last <= f.last {
		return
	}
	f.last = last
	f.dropMemoLocked()
	close(f.wake)
	f.wake = make(chan struct{})
}

// trimmed records the oldest change kept after a trim.
func (f *nameFeed) trimmed(oldest int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.oldest = oldest
	f.dropMemoLocked()
}

// dropMemoLocked forgets the memoized pages: they are out of date.
func (f *nameFeed) dropMemoLocked() {
	f.memo, f.memoed = map[pageKey]*signedPage{}, 0
	f.memoGen++
}

// page returns the page k, built by build only if no reader asked for it
// since the last change: 5,000 edges at the same cursor cost one query and
// one signature. A failed build is not kept.
func (f *nameFeed) page(k pageKey, build func() (*identity.Envelope, error)) (*signedPage, error) {
	f.mu.Lock()
	if p, ok := f.memo[k]; ok {
		f.mu.Unlock()
		<-p.done
		return p, p.err
	}
	p := &signedPage{done: make(chan struct{})}
	gen := f.memoGen
	if len(f.memo) < maxMemoPages {
		f.memo[k] = p
	}
	f.mu.Unlock()

	p.env, p.err = build()
	if p.err == nil {
		p.raw, p.err = json.Marshal(p.env)
	}
	close(p.done)

	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.memoGen != gen || f.memo[k] != p: // the memo was dropped meanwhile, or p was not memoized
	case p.err != nil || f.memoed+len(p.raw) > maxMemoBytes:
		delete(f.memo, k)
	default:
		f.memoed += len(p.raw)
	}
	return p, p.err
}

// admit counts a request from ip on the stream, within max in all and
// perIP from one address; release uncounts it.
func (f *nameFeed) admit(ip string, max, perIP int) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.waiters >= max:
		return nil, errorf(ErrBusy, "%d readers on the name-change stream already; retry shortly", f.waiters)
	case f.perIP[ip] >= perIP:
		return nil, errorf(ErrBusy, "%d requests on the name-change stream from %s already, at most %d", f.perIP[ip], ip, perIP)
	}
	f.waiters++
	f.perIP[ip]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.waiters--
		if f.perIP[ip]--; f.perIP[ip] == 0 {
			delete(f.perIP, ip)
		}
	}, nil
}

// NameChanges returns the page of the name-change stream after change
// since, signed with the origin's key (originapi.TypeNameChanges over
// originapi.NameChanges):
//
//   - since < 0 asks where the stream is: Since = To = Last, no change;
//   - a since older than the oldest change kept (trimmed), or past the
//     last one (another origin's, or a database started over), gives a
//     page with Reset set and To = Last: the reader missed changes;
//   - otherwise the changes after since, at most limit
//     (originapi.MaxNameChangesPage if limit is 0 or more than that) and
//     originapi.MaxNameChangesBytes of records and purges (but at least
//     one); with none yet, it waits up to wait (at most
//     originapi.MaxNameChangesWait) for one, then answers an empty page.
//
// It returns ctx's error if ctx ends while it waits. Readers at the same
// cursor share one page: the envelope returned must not be modified.
func (o *Origin) NameChanges(ctx context.Context, since int64, limit int, wait time.Duration) (*identity.Envelope, error) {
	p, err := o.nameChangesPage(ctx, since, limit, wait)
	if err != nil {
		return nil, err
	}
	return p.env, nil
}

func (o *Origin) nameChangesPage(ctx context.Context, since int64, limit int, wait time.Duration) (*signedPage, error) {
	if limit <= 0 || limit > originapi.MaxNameChangesPage {
		limit = originapi.MaxNameChangesPage
	}
	wait = min(max(wait, 0), originapi.MaxNameChangesWait)
	var timeout <-chan time.Time
	for waited := false; ; {
		oldest, last, wake := o.changes.state()
		if since != last || waited || wait == 0 {
			k := pageKey{since: since, last: last, limit: limit}
			// The build outlives a reader that goes away: others may
			// be waiting for the same page.
			bctx := context.WithoutCancel(ctx)
			return o.changes.page(k, func() (*identity.Envelope, error) { return o.buildNameChanges(bctx, k, oldest) })
		}
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-wake:
		case <-timeout:
			waited = true
		case <-o.changes.ending:
			waited = true // shutting down: answer now, the reader resumes elsewhere or later
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// EndWaits makes every long-poll of the name-change stream answer at once,
// now and from now on: a server shutting down gracefully (its
// http.Server.RegisterOnShutdown) need not wait out readers parked for up
// to originapi.MaxNameChangesWait. They resume from their cursor.
func (o *Origin) EndWaits() {
	o.changes.endOnce.Do(func() { close(o.changes.ending) })
}

// buildNameChanges reads and signs the page k, with oldest the oldest
// change kept.
func (o *Origin) buildNameChanges(ctx context.Context, k pageKey, oldest int64) (*identity.Envelope, error) {
	page := originapi.NameChanges{Since: k.since, To: k.since, Last: k.last, Changes: []originapi.NameChange{}}
	switch {
	case k.since < 0:
		page.Since, page.To = k.last, k.last
	case k.since > k.last || k.since < oldest-1:
		page.To, page.Reset = k.last, true
	case k.since < k.last:
		cs, err := origindb.Changes(ctx, o.db, k.since, k.last, k.limit, originapi.MaxNameChangesBytes)
		if err != nil {
			return nil, err
		}
		if len(cs) > 0 {
			page.Changes, page.To = cs, cs[len(cs)-1].ID
		}
	}
	return o.key.Sign(originapi.TypeNameChanges, page)
}

// changeCommitted counts change id of kind and wakes the stream's readers.
// It is called once the transaction that appended the change
// (origindb.AppendChange) has committed.
func (o *Origin) changeCommitted(id int64, kind string) {
	o.metrics.nameChanges.WithLabelValues(kind).Inc()
	o.changes.appended(id)
}

// trimNameChanges deletes the changes older than
// Config.NameChangesRetention, keeping the last keepNameChanges, and
// forgets the purge rate limits that are full again.
func (o *Origin) trimNameChanges(ctx context.Context) error {
	now := o.now()
	deleted, oldest, err := origindb.TrimChanges(ctx, o.db, now.Add(-o.cfg.NameChangesRetention), o.keepChanges)
	if err != nil {
		return err
	}
	o.changes.trimmed(oldest)
	o.purges.prune(now)
	if deleted > 0 {
		o.log.Info("name changes trimmed", zap.Int64("deleted", deleted), zap.Int64("oldest", oldest))
	}
	return nil
}

// followNameChanges catches the feed up with the changes other origins
// sharing the database append, every nameChangesPoll until ctx ends.
func (o *Origin) followNameChanges(ctx context.Context) {
	tick.Every(ctx, nameChangesPoll, func(ctx context.Context) {
		last, err := origindb.LastChange(ctx, o.db)
		if err != nil {
			if ctx.Err() == nil {
				o.log.Warn("reading the last name change failed", zap.Error(err))
			}
			return
		}
		o.changes.caughtUp(last)
	})
}

// openNameFeed reads the span of the stream as the database has it.
func (o *Origin) openNameFeed(ctx context.Context) error {
	oldest, last, err := origindb.ChangesSpan(ctx, o.db)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	o.changes = newNameFeed(oldest, last)
	return nil
}

// parseNameChangesQuery reads the parameters of GET /api/v1/names/changes:
// since, a change ID (none: -1, the start page); limit, 1 to
// originapi.MaxNameChangesPage (default: that); wait, whole seconds, 0 to
// originapi.MaxNameChangesWait (default 0: answer at once).
func parseNameChangesQuery(q url.Values) (since int64, limit int, wait time.Duration, err error) {
	since, limit = -1, originapi.MaxNameChangesPage
	if s := q.Get("since"); s != "" {
		if since, err = strconv.ParseInt(s, 10, 64); err != nil || since < 0 {
			return 0, 0, 0, errorf(ErrBadRequest, "since %.32q: want a change ID", s)
		}
	}
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit <= 0 || limit > originapi.MaxNameChangesPage {
			return 0, 0, 0, errorf(ErrBadRequest, "limit %.32q: want 1 to %d", s, originapi.MaxNameChangesPage)
		}
	}
	if s := q.Get("wait"); s != "" {
		maxWait := int(originapi.MaxNameChangesWait / time.Second)
		secs, err := strconv.Atoi(s)
		if err != nil || secs < 0 || secs > maxWait {
			return 0, 0, 0, errorf(ErrBadRequest, "wait %.32q: want 0 to %d seconds", s, maxWait)
		}
		wait = time.Duration(secs) * time.Second
	}
	return since, limit, wait, nil
}

func (o *Origin) serveNameChanges(w http.ResponseWriter, r *http.Request) {
	since, limit, wait, err := parseNameChangesQuery(r.URL.Query())
	if err != nil {
		o.fail(w, err)
		return
	}
	release, err := o.changes.admit(clientIP(r), o.cfg.MaxNameWaiters, o.cfg.MaxNameWaitersPerIP)
	if err != nil {
		o.fail(w, &retryLater{error: err, after: waitersRetry})
		return
	}
	o.metrics.nameWaiters.Inc()
	defer func() {
		o.metrics.nameWaiters.Dec()
		release()
	}()
	p, err := o.nameChangesPage(r.Context(), since, limit, wait)
	if err != nil {
		o.fail(w, err)
		return
	}
	// The page as built once for every reader of it.
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(p.raw)
}

// clientIP is the address of r's connection, without its port: the
// stream's limit per client goes by it, not by a header the client sets.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
