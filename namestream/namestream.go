// Package namestream follows the origin's stream of name changes: the
// signed, paged, resumable long-poll GET /api/v1/names/changes (wire in
// originapi/namechanges.go). Edges and the DNS router follow it so that a
// publish or a purge reaches them within a round trip, not a TTL.
//
// The origin's signature on a page vouches only for the stream's order and
// completeness. Nothing in a change is believed on the origin's word: a
// record is checked against its IPNS name's own key and must be signed for
// the human name it is streamed under; a purge must be signed by the key of
// the IPNS name it purges. A change that fails its check is skipped (the
// cursor moves past it: re-reading a signed page cannot mend it), and only
// verified changes reach the caller.
package namestream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// Kinds of Change: a record and a purge are the origin's kinds; Reset is
// the follower's own.
const (
	// Record: the name moved; Record, Root, Seq, TTL and Validity are set.
	Record = originapi.ChangeRecord
	// Purge: the name's publisher asked to drop cached answers; Purge is set.
	Purge = originapi.ChangePurge
	// Reset: the follower missed changes (it was away longer than the
	// origin keeps them); drop every cached answer of every name.
	Reset = "reset"
)

// DefaultWait is how long each long-poll asks the origin to wait for a
// change.
const DefaultWait = 25 * time.Second

// PurgeWindow is how old a purge may be and still be applied: the
// origin's retention of the stream plus its clock skew. An older one is a
// replay.
const PurgeWindow = 24*time.Hour + originapi.PurgeSkew

// maxPageBody bounds a page's answer: an envelope of at most
// identity.MaxEnvelopeSize of body, base64-encoded in JSON.
const maxPageBody = 2 * identity.MaxEnvelopeSize

// Change is one verified change of a name.
type Change struct {
	// ID is the change's position in the origin's stream (Reset: the
	// position the follower goes on from).
	ID int64
	// Kind is Record, Purge or Reset.
	Kind string
	// Name is the human name; IPNS its IPNS name (k51…).
	Name string
	IPNS ipns.Name
	// Record is the IPNS record's bytes (Record).
	Record []byte
	// Root is the root CID the record points to, when its value is an
	// /ipfs/ path (Record); Value is the value as signed.
	Root  cid.Cid
	Value string
	// Seq, TTL and Validity are the record's (Record).
	Seq      uint64
	TTL      time.Duration
	Validity time.Time
	// Purge is the verified purge (Purge).
	Purge *originapi.Purge
	// At is when the origin took the change.
	At time.Time
}

// Cursor is where a follower resumes: the ID of the last change it
// handled. Its zero value means none yet, and the follower starts at the
// stream's end. A Cursor is safe for concurrent use, and outlives a
// follower so that its successor (a Caddy reload) misses nothing.
type Cursor struct {
	v atomic.Int64 // ID + 1; 0: none
}

// ID returns the cursor's position, and false if it has none yet.
func (c *Cursor) ID() (int64, bool) {
	v := c.v.Load()
	return v - 1, v > 0
}

// Set moves the cursor to id.
func (c *Cursor) Set(id int64) { c.v.Store(id + 1) }

// Config configures a Follower.
type Config struct {
	// Origin is the origin's base URL; Pool, if set, is used instead.
	Origin string
	// Pool is the origins to ask, failing over between them: their stream
	// is one (the change IDs are the network's), so the cursor holds
	// across a switch. Default: a pool of Origin alone.
	Pool *originapi.Pool
	// OriginIDs returns the origins' peer IDs, the only keys pages may be
	// signed with.
	OriginIDs func(context.Context) ([]peer.ID, error)
	// Client sends the long-polls; nil means one with no overall timeout
	// (each poll is bounded by Wait + 10 s).
	Client *http.Client
	// Cursor is where to resume, and is moved as changes are handled; nil
	// means a cursor of the follower's own.
	Cursor *Cursor
	// Wait is how long each poll asks the origin to wait; 0 means
	// DefaultWait.
	Wait time.Duration
	// MinBackoff is the first pause after a failed poll, doubled up to
	// MaxBackoff, each with ±50 % jitter; 0 means 1 s and 10 s (a
	// restarted origin is followed again within 15 s).
	MinBackoff, MaxBackoff time.Duration
	// Logger logs failed polls and rejected changes; nil logs nothing.
	Logger *zap.Logger
	// Metrics counts pages and changes; nil counts nothing.
	Metrics *Metrics
	// Now is the clock purges are judged by; nil means time.Now.
	Now func() time.Time
}

// Follower follows one origin's name-change stream.
type Follower struct {
	cfg    Config
	lastOK atomic.Int64 // Unix ns of the last good page
}

// New returns a follower of cfg's origins, with defaults set; it refuses
// an Origin that is not a base URL when Pool is not set.
func New(cfg Config) (*Follower, error) {
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Cursor == nil {
		cfg.Cursor = new(Cursor)
	}
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	cfg.Wait = min(cfg.Wait, originapi.MaxNameChangesWait)
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Origin = strings.TrimRight(cfg.Origin, "/")
	if cfg.Pool == nil {
		pool, err := originapi.NewPool([]string{cfg.Origin})
		if err != nil {
			return nil, fmt.Errorf("namestream: %w", err)
		}
		cfg.Pool = pool
	}
	return &Follower{cfg: cfg}, nil
}

// Cursor returns the follower's cursor.
func (f *Follower) Cursor() *Cursor { return f.cfg.Cursor }

// Healthy reports whether a good page arrived within the last Wait + 10 s:
// while it does, changes reach the follower as the origin takes them.
func (f *Follower) Healthy() bool {
	last := f.lastOK.Load()
	return last != 0 && time.Since(time.Unix(0, last)) <= f.cfg.Wait+10*time.Second
}

// Run polls the stream and calls apply with each verified change, in
// order, until ctx ends; it returns ctx's error. After a failed poll or a
// page that fails its checks it backs off and asks again from the same
// cursor, so nothing is skipped but changes that fail their own checks.
func (f *Follower) Run(ctx context.Context, apply func(context.Context, Change)) error {
	failures := 0
	for ctx.Err() == nil {
		err := f.poll(ctx, apply)
		if err == nil {
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			break
		}
		f.cfg.Logger.Warn("name-change stream", zap.String("origin", f.cfg.Pool.Current()), zap.Error(err))
		pause := min(f.cfg.MinBackoff<<min(failures, 16), f.cfg.MaxBackoff)
		pause = time.Duration(float64(pause) * (0.5 + rand.Float64()))
		failures++
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return ctx.Err()
}

// errBadPage marks a page that fails the stream's checks.
var errBadPage = errors.New("bad page")

// poll asks for one page after the cursor and handles it.
func (f *Follower) poll(ctx context.Context, apply func(context.Context, Change)) error {
	ids, err := f.cfg.OriginIDs(ctx)
	if err != nil {
		f.cfg.Metrics.page("error")
		return fmt.Errorf("origins' peer IDs: %w", err)
	}
	cursor, started := f.cfg.Cursor.ID()
	q := url.Values{"wait": {strconv.Itoa(int(f.cfg.Wait / time.Second))}}
	if started {
		q.Set("since", strconv.FormatInt(cursor, 10))
	}
	pctx, cancel := context.WithTimeout(ctx, f.cfg.Wait+10*time.Second)
	defer cancel()
	var env identity.Envelope
	err = f.cfg.Pool.Do(pctx, func(ctx context.Context, base string) error {
		return httpkit.GetJSON(ctx, f.cfg.Client, base+"/api/v1/names/changes?"+q.Encode(), maxPageBody, &env)
	})
	if err != nil {
		f.cfg.Metrics.page("error")
		return err
	}
	page, err := OpenPage(&env, ids...)
	if err != nil {
		if errors.Is(err, identity.ErrBadSignature) || errors.Is(err, errWrongSigner) {
			f.cfg.Metrics.page("bad_signature")
		} else {
			f.cfg.Metrics.page("bad_page")
		}
		return err
	}
	if started && page.Since != cursor {
		f.cfg.Metrics.page("bad_page")
		return fmt.Errorf("%w: page after %d, asked after %d", errBadPage, page.Since, cursor)
	}
	f.cfg.Metrics.page("ok")
	f.lastOK.Store(time.Now().UnixNano())
	if page.Reset {
		if started {
			f.cfg.Logger.Warn("name-change stream reset: changes were missed; dropping every cached name",
				zap.Int64("since", cursor), zap.Int64("to", page.To))
			apply(ctx, Change{ID: page.To, Kind: Reset})
		}
		f.cfg.Cursor.Set(page.To)
		return nil
	}
	for _, nc := range page.Changes {
		c, err := f.verify(nc)
		if err != nil {
			f.cfg.Metrics.change(nc.Kind, "rejected")
			f.cfg.Logger.Warn("name change rejected", zap.Int64("id", nc.ID), zap.String("name", nc.Name), zap.Error(err))
		} else {
			f.cfg.Metrics.change(c.Kind, "verified")
			apply(ctx, c)
		}
		f.cfg.Cursor.Set(nc.ID)
	}
	if len(page.Changes) == 0 {
		f.cfg.Cursor.Set(page.To)
	}
	return nil
}

// errWrongSigner marks a page signed by a key other than the origin's.
var errWrongSigner = errors.New("page not signed by the origin")

// OpenPage opens a page of the stream: its signature, which must be one
// of origins', and its shape: changes by strictly increasing IDs above Since,
// the last of them To, To ≤ Last, and no changes on a Reset page. It does
// not check the changes themselves (see Verify).
func OpenPage(env *identity.Envelope, origins ...peer.ID) (*originapi.NameChanges, error) {
	var page originapi.NameChanges
	signer, err := env.Open(originapi.TypeNameChanges, &page)
	if err != nil {
		return nil, fmt.Errorf("name changes: %w", err)
	}
	if !slices.Contains(origins, signer) {
		return nil, fmt.Errorf("name changes signed by %s: %w (%v)", signer, errWrongSigner, origins)
	}
	if len(page.Changes) > originapi.MaxNameChangesPage {
		return nil, fmt.Errorf("%w: %d changes, at most %d", errBadPage, len(page.Changes), originapi.MaxNameChangesPage)
	}
	if page.Reset {
		// The origin no longer has what follows Since (trimmed), or never
		// had it (a cursor past its end: its database started over): go
		// on from its end, whichever side of Since that is.
		if len(page.Changes) > 0 || page.To != page.Last || page.To < 0 {
			return nil, fmt.Errorf("%w: a reset page to %d, last %d, with %d changes", errBadPage, page.To, page.Last, len(page.Changes))
		}
		return &page, nil
	}
	if page.Since < 0 || page.To < page.Since || page.Last < page.To {
		return nil, fmt.Errorf("%w: since %d, to %d, last %d", errBadPage, page.Since, page.To, page.Last)
	}
	prev := page.Since
	for _, c := range page.Changes {
		if c.ID <= prev {
			return nil, fmt.Errorf("%w: change %d after %d", errBadPage, c.ID, prev)
		}
		prev = c.ID
	}
	if len(page.Changes) > 0 && prev != page.To {
		return nil, fmt.Errorf("%w: last change %d, page to %d", errBadPage, prev, page.To)
	}
	return &page, nil
}

// verify checks one change with the follower's clock.
func (f *Follower) verify(nc originapi.NameChange) (Change, error) {
	return Verify(nc, f.cfg.Now())
}

// Verify checks one change on its own signatures, as of now: a record must
// be a valid IPNS record of its IPNS name, signed for its human name; a
// purge must be signed by its IPNS name's key, for the same name, and not
// older than PurgeWindow nor newer than now + PurgeSkew.
func Verify(nc originapi.NameChange, now time.Time) (Change, error) {
	if err := originapi.ValidateName(nc.Name); err != nil {
		return Change{}, err
	}
	name, err := ipns.NameFromString(nc.IPNS)
	if err != nil {
		return Change{}, fmt.Errorf("IPNS name %q: %w", nc.IPNS, err)
	}
	c := Change{ID: nc.ID, Kind: nc.Kind, Name: nc.Name, IPNS: name, At: nc.At}
	switch nc.Kind {
	case Record:
		if len(nc.Record) > ipns.MaxRecordSize {
			return Change{}, fmt.Errorf("record of %d bytes, at most %d", len(nc.Record), ipns.MaxRecordSize)
		}
		rec, err := ipns.UnmarshalRecord(nc.Record)
		if err != nil {
			return Change{}, fmt.Errorf("record: %w", err)
		}
		if err := ipns.ValidateWithName(rec, name); err != nil {
			return Change{}, fmt.Errorf("record of %s: %w", name, err)
		}
		if human, err := recordHuman(rec); err != nil || human != nc.Name {
			return Change{}, fmt.Errorf("record of %s is signed for name %q, streamed as %q (%v)", name, human, nc.Name, err)
		}
		c.Record = nc.Record
		v, err := rec.Value()
		if err != nil {
			return Change{}, fmt.Errorf("record value: %w", err)
		}
		c.Value = v.String()
		if v.Namespace() == path.IPFSNamespace {
			if ip, err := path.NewImmutablePath(v); err == nil {
				c.Root = ip.RootCid()
			}
		}
		if c.Seq, err = rec.Sequence(); err != nil {
			return Change{}, fmt.Errorf("record sequence: %w", err)
		}
		if c.Validity, err = rec.Validity(); err != nil {
			return Change{}, fmt.Errorf("record validity: %w", err)
		}
		if c.TTL, err = rec.TTL(); err != nil {
			c.TTL = 0
		}
	case Purge:
		if nc.Purge == nil {
			return Change{}, errors.New("purge change without a purge")
		}
		p, err := originapi.OpenPurge(nc.Purge)
		if err != nil {
			return Change{}, err
		}
		if p.Name != nc.Name || p.IPNS != nc.IPNS {
			return Change{}, fmt.Errorf("purge of %s (%s) streamed as %s (%s)", p.Name, p.IPNS, nc.Name, nc.IPNS)
		}
		if p.Time.Before(now.Add(-PurgeWindow)) || p.Time.After(now.Add(originapi.PurgeSkew)) {
			return Change{}, fmt.Errorf("purge signed at %s, outside the window around %s", p.Time.Format(time.RFC3339), now.Format(time.RFC3339))
		}
		c.Purge = p
	default:
		return Change{}, fmt.Errorf("unknown change kind %q", nc.Kind)
	}
	return c, nil
}

// recordHuman returns the human name a record is signed for ("" if none).
func recordHuman(rec *ipns.Record) (string, error) {
	if !rec.MetadataExists(originapi.RecordNameKey) {
		return "", nil
	}
	mv, err := rec.Metadata(originapi.RecordNameKey)
	if err != nil {
		return "", err
	}
	return mv.AsString()
}

// Metrics counts a follower's pages and changes.
type Metrics struct {
	pages   *prometheus.CounterVec
	changes *prometheus.CounterVec
}

// NewMetrics registers the follower metrics of role (edge, dns) with reg:
// topcdn_ROLE_name_stream_pages_total{result} (ok, error, bad_signature,
// bad_page), topcdn_ROLE_name_stream_changes_total{kind,result} (verified,
// rejected) and the gauge topcdn_ROLE_name_stream_up, which reads up().
// Collectors already registered by another follower of the same role are
// shared.
func NewMetrics(reg prometheus.Registerer, role string, up func() bool) *Metrics {
	m := &Metrics{
		pages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "topcdn_" + role + "_name_stream_pages_total",
			Help: "Pages of the origin's name-change stream, by result: ok, error (no answer), bad_signature, bad_page.",
		}, []string{"result"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "topcdn_" + role + "_name_stream_changes_total",
			Help: "Name changes read from the origin's stream, by kind and result: verified, or rejected (failed its own signature checks; skipped).",
		}, []string{"kind", "result"}),
	}
	m.pages = register(reg, m.pages)
	m.changes = register(reg, m.changes)
	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "topcdn_" + role + "_name_stream_up",
		Help: "1 while the origin's name-change stream answers, so changes arrive as they are made; 0 while names fall back to their TTLs.",
	}, func() float64 {
		if up() {
			return 1
		}
		return 0
	}))
	return m
}

// register registers c with reg, or returns the collector already there.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (m *Metrics) page(result string) {
	if m != nil {
		m.pages.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) change(kind, result string) {
	if m != nil {
		if kind != Record && kind != Purge {
			kind = "other"
		}
		m.changes.WithLabelValues(kind, result).Inc()
	}
}
