package billing

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/billingapi"
)

// What an edge is paid for an epoch is bounded by evidence from parties
// that do not profit from it (see README.md, "What bounds each payment"):
//
//	per site key k:  allow_k = DemandFactor × size_k × (first_k + ½ other_k)
//	                 paid_k  = min(claimed_k, allow_k)
//	pool             = bytes of the router's probes + bytes of billing's probes
//	total            = min(Σ paid_k + min(Σ excess_k, pool), counter)
//
// size_k is the bytes of the DAGs of the roots the edge's accepted records
// of k were found in (the origin's word); first_k and other_k are the
// client units the router handed the edge to for k, first or later in its
// answer (the router's count); counter is the epoch byte counter of the
// edge's signed heartbeats, relayed by the router (the edge's own word,
// which can only lower its pay). No counter, nothing paid.

// dkeyOf returns the demand key of a record: "name:NAME" for a record of
// a named site, else "cid:CID" with the CID of its root as the router
// spells it (CIDv1, base32), else "".
func dkeyOf(name, root string) string {
	if name != "" {
		return "name:" + strings.ToLower(name)
	}
	c, err := cid.Decode(root)
	if err != nil {
		return ""
	}
	if c.Version() == 0 {
		c = cid.NewCidV1(c.Type(), c.Hash())
	}
	return "cid:" + c.String()
}

// keyGroup is an edge's accepted bytes of one (site key, publisher, root)
// in an epoch.
type keyGroup struct {
	recordGroup
	dkey string
}

// edgeEvidence is what billing stored of the router's view of one edge
// in one epoch.
type edgeEvidence struct {
	counter, routerProbes, billingProbes int64
	demand                               map[string][2]int64 // dkey -> first, other
}

// boundedGroups returns the epoch's accepted bytes per (edge, publisher,
// root), each edge's total bounded by the evidence, and a refusal per
// bound that cut something. sure is false when the router's evidence was
// not read after the epoch's settle delay (settled after DemandWait).
func (l *Ledger) boundedGroups(ctx context.Context, tx querier, epoch int64, sure bool) ([]recordGroup, []rejection, error) {
	rows, err := tx.QueryContext(ctx, l.db.q(`SELECT edge, dkey, publisher, root, bytes, records FROM edge_keys k
		WHERE epoch = ? AND NOT EXISTS (SELECT 1 FROM forfeits f WHERE f.edge = k.edge AND f.epoch = k.epoch)
		ORDER BY edge, dkey, publisher, root`), epoch)
	if err != nil {
		return nil, nil, err
	}
	var all []keyGroup
	for rows.Next() {
		g := keyGroup{recordGroup: recordGroup{epoch: epoch}}
		if err := rows.Scan(&g.edge, &g.dkey, &g.publisher, &g.root, &g.bytes, &g.records); err != nil {
			rows.Close()
			return nil, nil, err
		}
		all = append(all, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if len(all) == 0 {
		return nil, nil, nil
	}
	ev, err := l.evidenceOf(ctx, tx, epoch)
	if err != nil {
		return nil, nil, err
	}
	adm, err := l.admissions(ctx, tx)
	if err != nil {
		return nil, nil, err
	}
	c := newBoundCache(tx)
	var (
		out     []recordGroup
		refused []rejection
	)
	for start := 0; start < len(all); {
		end := start + 1
		for end < len(all) && all[end].edge == all[start].edge {
			end++
		}
		groups, rs, err := l.boundEdge(ctx, epoch, all[start:end], ev[all[start].edge], adm, c, sure)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, groups...)
		refused = append(refused, rs...)
		start = end
	}
	// Group per (edge, publisher, root) for the upstream-read check and
	// the lines, as records were grouped before.
	slices.SortStableFunc(out, func(a, b recordGroup) int {
		return cmp.Or(strings.Compare(a.edge, b.edge), strings.Compare(a.publisher, b.publisher), strings.Compare(a.root, b.root))
	})
	merged := out[:0]
	for _, g := range out {
		if n := len(merged); n > 0 && merged[n-1].edge == g.edge && merged[n-1].publisher == g.publisher && merged[n-1].root == g.root {
			merged[n-1].bytes += g.bytes
			merged[n-1].records += g.records
			continue
		}
		merged = append(merged, g)
	}
	return merged, refused, nil
}

// boundEdge bounds one edge's groups of an epoch (all of the same edge,
// sorted by key).
func (l *Ledger) boundEdge(ctx context.Context, epoch int64, groups []keyGroup, ev *edgeEvidence, adm map[string]admission,
	c *boundCache, sure bool) ([]recordGroup, []rejection, error) {
	edge := groups[0].edge
	var claimed int64
	for _, g := range groups {
		claimed = addBytes(claimed, g.bytes)
	}
	refuse := func(reason billingapi.Reason, ref string, bytes int64, format string, args ...any) rejection {
		l.metrics.bounds.WithLabelValues(string(reason)).Add(float64(bytes))
		return rejection{account: edge, epoch: epoch, kind: "epoch", ref: ref, reason: reason, bytes: bytes,
			detail: fmt.Sprintf(format, args...)}
	}
	start := time.Unix(epoch, 0)
	if a, ok := adm[edge]; !ok || !a.covers(start, start.Add(l.opts.Epoch)) {
		return nil, []rejection{refuse(billingapi.ReasonNotAdmitted, "", claimed,
			"%d bytes claimed for epoch %d by an edge the billing operator did not admit for it", claimed, epoch)}, nil
	}
	if ev == nil || ev.counter == 0 {
		reason, why := billingapi.ReasonNoCounter, "the DNS router relayed no epoch byte counter from the edge's heartbeats"
		if !sure {
			reason, why = billingapi.ReasonNoDemandEvidence, "the DNS router could not be read for the epoch within the demand wait"
		}
		return nil, []rejection{refuse(reason, "", claimed, "%d bytes claimed for epoch %d: %s, so nothing bounds the claim", claimed, epoch, why)}, nil
	}
	// Per site key: what the demand allows.
	type key struct {
		dkey             string
		groups           []int // indexes into groups
		claimed, allowed int64
		reference        int64 // the allowance by the other edges' bytes per unit, if known
		paid             int64
	}
	var keys []*key
	for i, g := range groups {
		if n := len(keys); n == 0 || keys[n-1].dkey != g.dkey {
			keys = append(keys, &key{dkey: g.dkey})
		}
		k := keys[len(keys)-1]
		k.groups = append(k.groups, i)
		k.claimed = addBytes(k.claimed, g.bytes)
	}
	for _, k := range keys {
		d := ev.demand[k.dkey]
		units := float64(d[0]) + float64(d[1])/2
		if units == 0 || k.dkey == "" {
			continue
		}
		var size int64
		seen := map[string]bool{}
		for _, i := range k.groups {
			r := groups[i].root
			if strings.HasPrefix(k.dkey, "cid:") {
				r = strings.TrimPrefix(k.dkey, "cid:")
			}
			if r == "" || seen[r] {
				continue
			}
			seen[r] = true
			n, err := l.siteBytes(ctx, r, c.sizes)
			if err != nil {
				return nil, nil, err
			}
			size = addBytes(size, n)
		}
		k.allowed = mulBytes(float64(size)*l.opts.DemandFactor, units)
		// What the other edges' clients fetched per unit bounds it too.
		ref, ok, err := l.reference(ctx, c, epoch, k.dkey, edge)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			k.reference = mulBytes(l.opts.DemandHeadroom*ref, float64(d[0])+l.opts.DemandLaterWeight*float64(d[1]))
			k.allowed = min(k.allowed, k.reference)
		}
	}
	// Pay each key up to its allowance, then the excess from the probe
	// pool, largest excess first.
	var paid, excess int64
	for _, k := range keys {
		k.paid = min(k.claimed, k.allowed)
		paid = addBytes(paid, k.paid)
		excess = addBytes(excess, k.claimed-k.paid)
	}
	pool := addBytes(ev.routerProbes, ev.billingProbes)
	if excess > 0 && pool > 0 {
		byExcess := slices.Clone(keys)
		slices.SortStableFunc(byExcess, func(a, b *key) int {
			return cmp.Or(cmp.Compare(b.claimed-b.paid, a.claimed-a.paid), strings.Compare(a.dkey, b.dkey))
		})
		for _, k := range byExcess {
			give := min(k.claimed-k.paid, pool)
			k.paid += give
			pool -= give
			paid = addBytes(paid, give)
		}
	}
	var refused []rejection
	for _, k := range keys {
		if over := k.claimed - k.paid; over > 0 {
			d := ev.demand[k.dkey]
			why := fmt.Sprintf("%.0f× the site's bytes each", l.opts.DemandFactor)
			if k.reference > 0 && k.reference == k.allowed {
				why = fmt.Sprintf("%.1f× what other edges' clients fetched per unit", l.opts.DemandHeadroom)
			}
			refused = append(refused, refuse(billingapi.ReasonOverDemand, k.dkey, over,
				"%d of %d bytes of %s claimed for epoch %d exceed what the DNS router's answers could bring (%d first and %d later client units, %s: %d bytes) and the probes' bytes",
				over, k.claimed, k.dkey, epoch, d[0], d[1], why, k.allowed))
		}
	}
	// The edge's own counter bounds the total.
	if paid > ev.counter {
		over := paid - ev.counter
		refused = append(refused, refuse(billingapi.ReasonOverCounter, "", over,
			"%d bytes within demand for epoch %d, but the edge's heartbeats counted %d bytes served in it", paid, epoch, ev.counter))
		weights := make([]int64, len(keys))
		for i, k := range keys {
			weights[i] = k.paid
		}
		for i, n := range split(ev.counter, weights) {
			keys[i].paid = n
		}
		paid = ev.counter
	}
	l.metrics.bounds.WithLabelValues("paid").Add(float64(paid))
	// Each key's pay goes to its groups pro rata to their bytes.
	var out []recordGroup
	for _, k := range keys {
		if k.paid == 0 {
			continue
		}
		weights := make([]int64, len(k.groups))
		for j, i := range k.groups {
			weights[j] = groups[i].bytes
		}
		for j, n := range split(k.paid, weights) {
			if n > 0 {
				g := groups[k.groups[j]].recordGroup
				g.bytes = n
				out = append(out, g)
			}
		}
	}
	return out, refused, nil
}

// boundCache is what one settlement's bounds look up, memoized: the bytes
// of each site, and each site key's bytes and first-place units per edge
// over the reference window.
type boundCache struct {
	tx    querier
	sizes map[string]int64
	refs  map[string]map[string][2]int64 // dkey -> edge -> bytes, first units
}

func newBoundCache(tx querier) *boundCache {
	return &boundCache{tx: tx, sizes: map[string]int64{}, refs: map[string]map[string][2]int64{}}
}

// minReferenceUnits is how many first-place client units the other edges
// must have had for a site key in the window before what their clients
// fetched per unit bounds an edge's allowance.
const minReferenceUnits = 20

// reference returns the bytes the other edges (all but edge) claimed for
// site key dkey per client unit the router sent them first, over the
// DemandWindow ending with epoch, and whether there is one to go by (the
// others had minReferenceUnits units at least, and DemandHeadroom is on).
// The clients the router sends one edge are the same population as those
// it sends the others, so an edge whose claims per unit run far above
// theirs claims for fetches that did not happen; the judged edge does not
// weigh in its own reference.
func (l *Ledger) reference(ctx context.Context, c *boundCache, epoch int64, dkey, edge string) (float64, bool, error) {
	if l.opts.DemandHeadroom <= 0 || dkey == "" {
		return 0, false, nil
	}
	per, ok := c.refs[dkey]
	if !ok {
		per = map[string][2]int64{}
		from := epoch - int64(l.opts.DemandWindow/time.Second) + l.secs
		sum := func(query string, i int) error {
			rows, err := c.tx.QueryContext(ctx, l.db.q(query), dkey, from, epoch)
			if err != nil {
				return fmt.Errorf("billing: demand reference: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var (
					e string
					n int64
				)
				if err := rows.Scan(&e, &n); err != nil {
					return fmt.Errorf("billing: demand reference: %w", err)
				}
				v := per[e]
				v[i] = n
				per[e] = v
			}
			return rows.Err()
		}
		if err := sum(`SELECT edge, CAST(sum(bytes) AS BIGINT) FROM edge_keys WHERE dkey = ? AND epoch BETWEEN ? AND ? GROUP BY edge`, 0); err != nil {
			return 0, false, err
		}
		if err := sum(`SELECT edge, CAST(sum(first) AS BIGINT) FROM demand WHERE dkey = ? AND epoch BETWEEN ? AND ? GROUP BY edge`, 1); err != nil {
			return 0, false, err
		}
		c.refs[dkey] = per
	}
	var bytes, units int64
	for e, v := range per {
		if e != edge {
			bytes, units = addBytes(bytes, v[0]), addBytes(units, v[1])
		}
	}
	if units < minReferenceUnits {
		return 0, false, nil
	}
	return float64(bytes) / float64(units), true, nil
}

// siteBytes returns the bytes of the DAG under root, from the origin,
// memoized in sizes for one settlement. Content that cannot size (or a
// root the origin refuses) allows nothing.
func (l *Ledger) siteBytes(ctx context.Context, root string, sizes map[string]int64) (int64, error) {
	if n, ok := sizes[root]; ok {
		return n, nil
	}
	s, ok := l.content.(Sizer)
	if !ok {
		return 0, nil
	}
	n, err := s.SiteBytes(ctx, root)
	switch {
	case reasonOf(err) != "":
		n = 0
	case err != nil:
		return 0, fmt.Errorf("billing: %w: size of %s: %w", errTransient, root, err)
	}
	sizes[root] = n
	return n, nil
}

// evidenceOf returns the stored evidence of every edge for epoch.
func (l *Ledger) evidenceOf(ctx context.Context, tx querier, epoch int64) (map[string]*edgeEvidence, error) {
	ev := map[string]*edgeEvidence{}
	get := func(edge string) *edgeEvidence {
		e := ev[edge]
		if e == nil {
			e = &edgeEvidence{demand: map[string][2]int64{}}
			ev[edge] = e
		}
		return e
	}
	scan := func(query string, fn func(edge string, a, b int64)) error {
		rows, err := tx.QueryContext(ctx, l.db.q(query), epoch)
		if err != nil {
			return fmt.Errorf("billing: evidence: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				edge string
				a, b int64
			)
			if err := rows.Scan(&edge, &a, &b); err != nil {
				return fmt.Errorf("billing: evidence: %w", err)
			}
			fn(edge, a, b)
		}
		return rows.Err()
	}
	if err := scan(`SELECT edge, counter, probe_bytes FROM edge_epochs WHERE epoch = ?`, func(edge string, counter, probes int64) {
		e := get(edge)
		e.counter, e.routerProbes = counter, probes
	}); err != nil {
		return nil, err
	}
	if err := scan(`SELECT edge, bytes, 0 FROM probe_reads WHERE epoch = ?`, func(edge string, n, _ int64) {
		get(edge).billingProbes = n
	}); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, l.db.q(`SELECT edge, dkey, first, other FROM demand WHERE epoch = ?`), epoch)
	if err != nil {
		return nil, fmt.Errorf("billing: evidence: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			edge, dkey   string
			first, other int64
		)
		if err := rows.Scan(&edge, &dkey, &first, &other); err != nil {
			return nil, fmt.Errorf("billing: evidence: %w", err)
		}
		get(edge).demand[dkey] = [2]int64{first, other}
	}
	return ev, rows.Err()
}

// mulBytes returns floor(a × b) for a, b >= 0, saturating at the int64
// maximum.
func mulBytes(a, b float64) int64 {
	v := a * b
	if v >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// split divides total over weights pro rata (floor), the remainder going
// one unit at a time to the largest weights first (the first of equals),
// so that the parts sum to total exactly. With no weight, all goes to the
// first part.
func split(total int64, weights []int64) []int64 {
	out := make([]int64, len(weights))
	if len(weights) == 0 || total <= 0 {
		return out
	}
	var sum int64
	for _, w := range weights {
		sum = addBytes(sum, max(w, 0))
	}
	if sum == 0 {
		out[0] = total
		return out
	}
	var given int64
	for i, w := range weights {
		out[i] = Price(total, w, 1, sum) // floor(total × w / sum), exact
		given += out[i]
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(weights[b], weights[a]) })
	for i := 0; given < total; i = (i + 1) % len(order) {
		out[order[i]]++
		given++
	}
	return out
}
