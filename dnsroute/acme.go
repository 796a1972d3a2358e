package dnsroute

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"go.uber.org/zap"
)

// ACME DNS-01 challenge records: an edge the router hands out may have it
// set a TXT record at the challenge names of the zone's wildcards, so that
// it obtains its own certificates for them from an ACME CA (see README.md,
// "ACME challenges").
const (
	// challengeLife is how long a record stays after its add.
	challengeLife = 10 * time.Minute
	// challengeTTL is the TTL of challenge TXT answers.
	challengeTTL = dnsrouteapi.ChallengeTTL
	// maxChallengesPerEdge bounds one edge's live records: three
	// wildcards, each validated again while an order is pending.
	maxChallengesPerEdge = 8
	// maxChallengeAdds and challengeRefill are an edge's bucket of adds:
	// 20 at once, then one a minute.
	maxChallengeAdds = 20
	challengeRefill  = time.Minute
	// maxChallengesPerName bounds the values at one name, whose answer
	// must stay small (32 values of 43 bytes fit a TCP answer well).
	maxChallengesPerName = 32
	// maxChallenges bounds the table.
	maxChallenges = 1024
	// challengeRetryAfter is the Retry-After, in seconds, of a challenge
	// from an edge not handed out yet: its first probes take a tick or
	// two after its first heartbeat.
	challengeRetryAfter = "1"
)

// errOutOfZone marks a challenge for a name the router sets no records at
// (wrapped with dnsrouteapi.ErrChallengeRefused).
var errOutOfZone = errors.New("not a name the router sets challenge records at")

// routerPeer is the owner of the records the router sets for itself
// (Challenges): no edge has the empty peer ID.
const routerPeer = peer.ID("")

// challengeRecord is one TXT value, set by one edge (or the router).
type challengeRecord struct {
	peer    peer.ID
	value   string
	expires time.Time
}

// challengePeer is what the table counts of one edge.
type challengePeer struct {
	live   int
	tokens float64   // adds left
	filled time.Time // when tokens was last refilled
}

// challengeTable holds the challenge records. Guarded by Router.mu; its
// view is immutable, and snapshots share it.
type challengeTable struct {
	zone    string
	fixed   [3]string // the names edges may set: _acme-challenge.ZONE, .ipfs.ZONE, .ipns.ZONE
	records map[string][]challengeRecord
	peers   map[peer.ID]*challengePeer
	total   int
	live    prometheus.Gauge
	// view is what answers read: owner name → values, with the fixed
	// names always present (NODATA when empty). Rebuilt on each change.
	view map[string][]string
}

func newChallengeTable(zone string, live prometheus.Gauge) *challengeTable {
	t := &challengeTable{zone: zone, records: make(map[string][]challengeRecord), peers: make(map[peer.ID]*challengePeer), live: live}
	t.fixed = [3]string{dnsrouteapi.ChallengePrefix + zone, dnsrouteapi.ChallengePrefix + "ipfs." + zone,
		dnsrouteapi.ChallengePrefix + "ipns." + zone}
	t.rebuildView()
	return t
}

// edgeOwner maps the name of an edge's challenge (lower case, fully
// qualified) to the owner name of its record: the three wildcards' names
// map to themselves, anything else (a site's name, a name outside the
// zone) to nothing.
func (t *challengeTable) edgeOwner(fqdn string) (string, bool) {
	if slices.Contains(t.fixed[:], fqdn) {
		return fqdn, true
	}
	return "", false
}

// add sets value at owner for id, or renews it when id has it there
// already. It reports whether the records changed (a renewal changes no
// answer).
func (t *challengeTable) add(owner string, id peer.ID, value string, now time.Time) (bool, error) {
	recs := t.records[owner]
	for i := range recs {
		if recs[i].peer == id && recs[i].value == value {
			recs[i].expires = now.Add(challengeLife)
			return false, nil
		}
	}
	p := t.peers[id]
	if p == nil {
		p = &challengePeer{tokens: maxChallengeAdds, filled: now}
		t.peers[id] = p
	}
	p.refill(now)
	limited := func(format string, args ...any) (bool, error) {
		return false, fmt.Errorf("%w: "+format, append([]any{dnsrouteapi.ErrChallengeLimited}, args...)...)
	}
	switch {
	case id != routerPeer && p.live >= maxChallengesPerEdge:
		return limited("%s has %d challenge records set, the most an edge may", id, p.live)
	case id != routerPeer && p.tokens < 1:
		return limited("%s added %d challenge records lately: one more a minute", id, maxChallengeAdds)
	case len(recs) >= maxChallengesPerName:
		return limited("%s has %d values, the most a name may", owner, len(recs))
	case t.total >= maxChallenges:
		return limited("the router holds %d challenge records, the most it may", t.total)
	}
	if id != routerPeer {
		p.tokens--
	}
	p.live++
	t.total++
	t.records[owner] = append(recs, challengeRecord{peer: id, value: value, expires: now.Add(challengeLife)})
	t.rebuildView()
	return true, nil
}

// refill adds the adds earned since p was last filled.
func (p *challengePeer) refill(now time.Time) {
	if d := now.Sub(p.filled); d > 0 {
		p.tokens = min(maxChallengeAdds, p.tokens+float64(d)/float64(challengeRefill))
	}
	p.filled = now
}

// remove deletes id's records at owner: the one of value, or all of them
// when value is empty. It reports whether any was there.
func (t *challengeTable) remove(owner string, id peer.ID, value string) bool {
	n := t.drop(func(name string, rec challengeRecord) bool {
		return name == owner && rec.peer == id && (value == "" || rec.value == value)
	}, owner)
	return n > 0
}

// expire deletes the records past their life and those of edges keep
// says no longer may hold any, and forgets edges with no records whose
// adds are all back. It reports whether any record went.
func (t *challengeTable) expire(now time.Time, keep func(peer.ID) bool) bool {
	n := t.drop(func(_ string, rec challengeRecord) bool {
		return !now.Before(rec.expires) || (rec.peer != routerPeer && !keep(rec.peer))
	}, "")
	for id, p := range t.peers {
		if p.live == 0 {
			if p.refill(now); p.tokens >= maxChallengeAdds {
				delete(t.peers, id)
			}
		}
	}
	return n > 0
}

// drop deletes the records gone says to, at name only when it is not
// empty, and returns how many it deleted.
func (t *challengeTable) drop(gone func(name string, rec challengeRecord) bool, name string) int {
	n := 0
	for owner, recs := range t.records {
		if name != "" && owner != name {
			continue
		}
		kept := slices.DeleteFunc(recs, func(rec challengeRecord) bool {
			if !gone(owner, rec) {
				return false
			}
			if p := t.peers[rec.peer]; p != nil {
				p.live--
			}
			n++
			return true
		})
		if len(kept) == 0 {
			delete(t.records, owner)
		} else {
			t.records[owner] = kept
		}
	}
	if n > 0 {
		t.total -= n
		t.rebuildView()
	}
	return n
}

// rebuildView publishes the records as a new view.
func (t *challengeTable) rebuildView() {
	v := make(map[string][]string, len(t.records)+len(t.fixed))
	for _, n := range t.fixed {
		v[n] = nil
	}
	for owner, recs := range t.records {
		vals := make([]string, 0, len(recs))
		for _, rec := range recs {
			if !slices.Contains(vals, rec.value) {
				vals = append(vals, rec.value)
			}
		}
		v[owner] = vals
	}
	t.view = v
	t.live.Set(float64(t.total))
}

// AcceptChallenge verifies an edge's signed challenge and sets or removes
// its TXT record. It returns an error wrapping
// dnsrouteapi.ErrForgedChallenge, ErrChallengeRefused (an edge not allowed,
// not admitted by billing or quarantined; a name other than the zone's
// three wildcards' _acme-challenge names), ErrChallengeNotReady (an edge
// the router does not hand out yet: no heartbeat, not probed healthy, or
// billing's admitted list not read yet), ErrInvalidChallenge (malformed,
// or a time off the router's clock by more than HeartbeatSkew) or
// ErrChallengeLimited when it refuses one. Only an edge in the answers may
// add; any signer may delete what it added.
func (r *Router) AcceptChallenge(ctx context.Context, env *identity.Envelope) error {
	op, err := r.acceptChallenge(ctx, env, "")
	r.metrics.challenges.WithLabelValues(op, challengeResult(err)).Inc()
	return err
}

// acceptChallenge is AcceptChallenge for a challenge of op wantOp ("": any),
// also returning its op (its metric label).
func (r *Router) acceptChallenge(_ context.Context, env *identity.Envelope, wantOp string) (string, error) {
	ch, err := dnsrouteapi.OpenChallenge(env)
	if err != nil {
		return cmp.Or(wantOp, "other"), fmt.Errorf("dnsroute: %w", err)
	}
	if wantOp != "" && ch.Op != wantOp {
		return wantOp, fmt.Errorf("dnsroute: %w: a challenge to %s sent to %s", dnsrouteapi.ErrInvalidChallenge, ch.Op, wantOp)
	}
	now := r.cfg.now()
	if d := now.Sub(ch.Time); d > r.cfg.HeartbeatSkew || d < -r.cfg.HeartbeatSkew {
		return ch.Op, fmt.Errorf("dnsroute: %w: challenge from %s is %s off the router's clock (allowed: %s)",
			dnsrouteapi.ErrInvalidChallenge, ch.PeerID, d.Round(time.Millisecond), r.cfg.HeartbeatSkew)
	}
	owner, ok := r.acme.edgeOwner(ch.FQDN)
	if !ok {
		return ch.Op, fmt.Errorf("dnsroute: %w: %s: %w (the zone's are %s)", dnsrouteapi.ErrChallengeRefused, ch.FQDN,
			errOutOfZone, strings.Join(r.acme.fixed[:], ", "))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch.Op == dnsrouteapi.OpDelete {
		if r.acme.remove(owner, ch.PeerID, ch.Value) {
			r.rebuildLocked()
		}
		return ch.Op, nil
	}
	if err := r.mayChallengeLocked(ch.PeerID, now); err != nil {
		return ch.Op, fmt.Errorf("dnsroute: %w", err)
	}
	added, err := r.acme.add(owner, ch.PeerID, ch.Value, now)
	if err != nil {
		return ch.Op, fmt.Errorf("dnsroute: %w", err)
	}
	if added {
		r.log.Info("acme challenge set", zap.String("name", owner), zap.Stringer("peer", ch.PeerID))
		r.rebuildLocked()
	}
	return ch.Op, nil
}

// mayChallengeLocked reports whether edge id may set challenge records:
// only while the router would hand it out, and, when billing is
// configured, once billing's list admitted it (stricter than answers,
// which hand out edges before billing is read). r.mu must be held.
func (r *Router) mayChallengeLocked(id peer.ID, now time.Time) error {
	if r.allowed != nil && !r.allowed[id] {
		return fmt.Errorf("%w: %s is not an allowed edge", dnsrouteapi.ErrChallengeRefused, id)
	}
	if q, held := r.quarantinedLocked(id, now); held {
		return fmt.Errorf("%w: %s is quarantined until %s: %s", dnsrouteapi.ErrChallengeRefused, id,
			q.until.UTC().Format(time.RFC3339), q.reason)
	}
	if r.admitted != nil && !r.admitted[id] {
		return fmt.Errorf("%w: %s is not admitted by billing", dnsrouteapi.ErrChallengeRefused, id)
	}
	if r.cfg.Billing != "" && r.admitted == nil {
		return fmt.Errorf("%w: billing's admitted edges not read yet", dnsrouteapi.ErrChallengeNotReady)
	}
	e := r.edges[id]
	switch {
	case e == nil:
		return fmt.Errorf("%w: no heartbeat from %s yet", dnsrouteapi.ErrChallengeNotReady, id)
	case !r.certifiableLocked(e):
		why := cmp.Or(e.probeErr, e.contentErr)
		return fmt.Errorf("%w: %s is not healthy (yet): %s", dnsrouteapi.ErrChallengeNotReady, id, cmp.Or(why, "heartbeats late"))
	}
	return nil
}

// inAnswersLocked reports whether answers hand e out: certifiable, and
// its HTTPS, when it has an HTTPS URL, passed its probe. r.mu must be
// held.
func (r *Router) inAnswersLocked(e *edge) bool {
	return r.certifiableLocked(e) && e.httpsOK
}

// certifiableLocked reports whether e may hold challenge records: healthy
// (probed over HTTP, fresh, content vouched for, not quarantined) and
// admitted by billing once billing's list was read. Its HTTPS probe is
// left out, as that cannot pass before the edge has its certificates.
// r.mu must be held.
func (r *Router) certifiableLocked(e *edge) bool {
	return e.healthy && (r.admitted == nil || r.admitted[e.hb.PeerID])
}

// expireChallengesLocked deletes the records past their life and those
// of edges no longer handed out. It reports whether answers changed; the
// caller rebuilds. r.mu must be held.
func (r *Router) expireChallengesLocked(now time.Time) bool {
	return r.acme.expire(now, func(id peer.ID) bool {
		e := r.edges[id]
		return e != nil && r.certifiableLocked(e)
	})
}

// challengeAnswer answers at a challenge name: its values as TXT (for TXT
// and ANY), else NODATA.
func (r *Router) challengeAnswer(m *dns.Msg, s *snapshot, owner string, t uint16, vals []string) {
	if (t != dns.TypeTXT && t != dns.TypeANY) || len(vals) == 0 {
		r.nodata(m, s)
		return
	}
	for _, v := range vals {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTXT, Class: dns.ClassINET,
			Ttl: uint32(challengeTTL / time.Second)}, Txt: []string{v}})
	}
}

// serveChallenge takes an edge's challenge: POST to add or delete, DELETE
// to delete.
func (r *Router) serveChallenge(w http.ResponseWriter, req *http.Request) {
	wantOp := ""
	if req.Method == http.MethodDelete {
		wantOp = dnsrouteapi.OpDelete
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, dnsrouteapi.MaxChallengeBody))
	if err != nil {
		r.metrics.challenges.WithLabelValues(cmp.Or(wantOp, "other"), "invalid").Inc()
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("challenge body: %w", err))
		return
	}
	var env identity.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		r.metrics.challenges.WithLabelValues(cmp.Or(wantOp, "other"), "invalid").Inc()
		writeError(w, http.StatusBadRequest, fmt.Errorf("challenge: want a JSON envelope: %w", err))
		return
	}
	op, err := r.acceptChallenge(req.Context(), &env, wantOp)
	r.metrics.challenges.WithLabelValues(op, challengeResult(err)).Inc()
	if err != nil {
		st := challengeStatus(err)
		switch st {
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", challengeRetryAfter)
		case http.StatusTooManyRequests:
			w.Header().Set("Retry-After", fmt.Sprint(int(challengeRefill/time.Second)))
		}
		writeError(w, st, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// challengeStatus maps a challenge error to an HTTP status code.
func challengeStatus(err error) int {
	switch {
	case errors.Is(err, dnsrouteapi.ErrForgedChallenge), errors.Is(err, dnsrouteapi.ErrChallengeRefused):
		return http.StatusForbidden
	case errors.Is(err, dnsrouteapi.ErrChallengeNotReady):
		return http.StatusServiceUnavailable
	case errors.Is(err, dnsrouteapi.ErrChallengeLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, dnsrouteapi.ErrInvalidChallenge):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

// challengeResult is the metric label of a challenge's outcome.
func challengeResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, dnsrouteapi.ErrForgedChallenge):
		return "forged"
	case errors.Is(err, errOutOfZone):
		return "out_of_zone"
	case errors.Is(err, dnsrouteapi.ErrChallengeRefused):
		return "refused"
	case errors.Is(err, dnsrouteapi.ErrChallengeNotReady):
		return "not_ready"
	case errors.Is(err, dnsrouteapi.ErrChallengeLimited):
		return "limited"
	default:
		return "invalid"
	}
}
