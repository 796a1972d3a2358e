package billing

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/storage"
	"github.com/topcdn/topcdn/storageapi"
)

func TestPrice(t *testing.T) {
	tests := []struct {
		name               string
		n, price, den, num int64
		want               int64
	}{
		{"one GiB", GiB, 7, 1, GiB, 7},
		{"rounds down", GiB - 1, 7, 1, GiB, 6},
		{"no overflow", 1 << 40, 1 << 40, 1, GiB, 1 << 50},
		{"saturates", 1 << 62, 1 << 62, 1, 1, 1<<63 - 1},
		{"zero price", 123, 0, 1, GiB, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Price(tc.n, tc.price, tc.den, tc.num); got != tc.want {
				t.Fatalf("Price = %d, want %d", got, tc.want)
			}
		})
	}
	// A GiB held for a whole month in 60 s epochs earns the monthly price
	// (43200 epochs of 60 s make 30 days).
	if got := StoredAmount(GiB, 43200*5, 60); got != 5 {
		t.Fatalf("one epoch of a GiB-month: %d", got)
	}
}

// TestSettlementStorageAndFunds settles storage rent, runs a publisher out
// of funds, and checks the suspension after the grace period and its end
// on a deposit.
func TestSettlementStorageAndFunds(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{PricePerGiBMonthStored: 43200 * 10, Grace: 90 * time.Second})
	pub, sp := testkit.Key(t, 40), testkit.Key(t, 41)
	tl.content.holdings = []Holding{{Peer: sp.ID, Publisher: pub.ID, Bytes: GiB}} // 10 per epoch
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 25, Nonce: "a"})); err != nil {
		t.Fatal(err)
	}
	// Deposits: once per nonce; another nonce's content conflicts; only the
	// operator signs them.
	if a, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 25, Nonce: "a"})); err != nil || a.Balance != 25 {
		t.Fatalf("resent deposit: %+v, %v", a, err)
	}
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 26, Nonce: "a"})); !errors.Is(err, ErrConflict) {
		t.Fatalf("nonce reused for another amount: %v", err)
	}
	if _, err := tl.Deposit(ctx, mustSign(t, pub, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 1000, Nonce: "b"})); reasonOf(err) != billingapi.ReasonSignature {
		t.Fatalf("deposit signed by the publisher: %v", err)
	}

	// Three epochs (t0, t0+60, t0+120) close by t0+240 with a 60 s delay.
	tl.setNow(t0.Add(240 * time.Second))
	res, err := tl.Settle(ctx)
	if err != nil || len(res.Epochs) != 3 || res.Paid != 30 {
		t.Fatalf("settle: %+v, %v", res, err)
	}
	a, _ := tl.Account(ctx, pub.ID.String())
	if a.Balance != -5 || a.OutOfFundsSince == nil {
		t.Fatalf("publisher after 30 of rent on 25: %+v", a)
	}
	if s, _ := tl.Account(ctx, sp.ID.String()); s.Balance != 30 {
		t.Fatalf("storage peer: %+v", s)
	}
	if sus, _ := tl.Suspended(ctx); len(sus) != 0 {
		t.Fatalf("suspended within the grace period: %v", sus)
	}
	tl.setNow(t0.Add(400 * time.Second))
	if sus, _ := tl.Suspended(ctx); len(sus) != 1 || sus[0] != pub.ID.String() {
		t.Fatalf("suspended after the grace period: %v", sus)
	}
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 100, Nonce: "c"})); err != nil {
		t.Fatal(err)
	}
	if sus, _ := tl.Suspended(ctx); len(sus) != 0 {
		t.Fatalf("still suspended after a deposit: %v", sus)
	}
	if total, _ := tl.Total(ctx); total != 0 {
		t.Fatalf("sum of balances %d", total)
	}
}

// edgeList is a fixed EdgeDirectory.
type edgeList struct {
	edges []dnsrouteapi.EdgeInfo
	err   error
}

func (e edgeList) Edges(ctx context.Context) ([]EdgeInfo, error) { return wrapEdges(e.edges), e.err }

// wrapEdges turns the router's edge list into what a directory returns,
// with nothing tracked yet.
func wrapEdges(es []dnsrouteapi.EdgeInfo) []EdgeInfo {
	out := make([]EdgeInfo, len(es))
	for i, e := range es {
		out[i] = EdgeInfo{EdgeInfo: e}
	}
	return out
}

func TestDNSCheck(t *testing.T) {
	ctx := context.Background()
	pub, edge := testkit.Key(t, 50), testkit.Key(t, 51)
	e0 := t0.Unix() - 60
	big := func(seq uint64) []billingapi.Record { // 100 MiB in 100 responses of 1 MiB
		var rs []billingapi.Record
		for i := range 100 {
			rs = append(rs, rec(seq*1000+uint64(i), "blog", "big", 1<<20, e0))
		}
		return rs
	}
	const MiB = 1 << 20
	// hb lists the edge with heartbeats reporting bytes, its last one at
	// t0+after (epoch e0 ends at t0), every 2 s.
	hb := func(answers uint64, bytes uint64, after time.Duration, rate float64) *hbDir {
		return &hbDir{edges: []EdgeInfo{{EdgeInfo: dnsrouteapi.EdgeInfo{Peer: edge.ID.String(), Healthy: true, Answers: answers,
			IntervalMS: 2000, LastHeartbeat: t0.Add(after), Bytes: bytes}, ByteRate: rate}}}
	}
	const keep = 1
	restarted := hb(3, 1*MiB, 6*time.Second, 0)
	restarted.edges[0].MaxBytes = 150 * MiB
	noTime := hb(3, 1*MiB, 0, 0)
	noTime.edges[0].LastHeartbeat = time.Time{}
	tests := []struct {
		name string
		dns  EdgeDirectory
		now  time.Duration // the clock, after t0
		recs []billingapi.Record
		// resend: the batch is deferred first; 10 s later, after another
		// heartbeat reporting resend bytes (keep: as before), it is sent
		// again.
		resend    uint64
		want      billingapi.Reason
		transient bool
		metric    string
	}{
		{"unconfigured", nil, 0, big(1), 0, "", false, "unconfigured"},
		{"handed out", edgeList{edges: []dnsrouteapi.EdgeInfo{{Peer: edge.ID.String(), Healthy: true, Answers: 3}}}, 0, big(2), 0, "", false, "ok"},
		{"never handed out, little", edgeList{}, 0, big(3)[:10], 0, "", false, "ok"},
		{"never handed out, much", edgeList{edges: []dnsrouteapi.EdgeInfo{{Peer: edge.ID.String(), Answers: 0}}}, 0, big(4), 0, billingapi.ReasonDNSImplausible, false, "rejected"},
		{"unlisted, much", edgeList{}, 0, big(5), 0, billingapi.ReasonDNSImplausible, false, "rejected"},
		{"router down", edgeList{err: errors.New("down")}, 0, big(6), 0, "", false, "skipped"},

		// Heartbeats: 100 MiB claimed for epoch e0 (which ends at t0).
		{"heartbeats report more", hb(3, 200*MiB, 6*time.Second, 0), 7 * time.Second, big(7), 0, "", false, "ok"},
		{"heartbeats report less by exactly 1 MiB", hb(3, 99*MiB, 6*time.Second, 0), 7 * time.Second, big(8), 0, "", false, "ok"},
		{"heartbeats report less by 1 MiB and a byte", hb(3, 99*MiB-1, 6*time.Second, 0), 7 * time.Second, big(9), keep,
			billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
		{"heartbeats report 1 MiB", hb(3, 1*MiB, 6*time.Second, 0), 7 * time.Second, big(10), keep, billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
		{"never handed out, heartbeats report 1 MiB", hb(0, 1*MiB, 6*time.Second, 0), 7 * time.Second, big(11)[:10], keep,
			billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
		// Last heartbeat 1 s before the epoch ended, 1 s ago, 2 s apart at
		// 1 MiB/s: slack 2 × 1 MiB/s × (1 s + 2 s) + 1 MiB = 7 MiB.
		{"staleness slack: within", hb(3, 93*MiB, -time.Second, MiB), 0, big(12), 0, "", false, "ok"},
		{"staleness slack: beyond: deferred", hb(3, 92*MiB, -time.Second, MiB), 0, big(13), 0, "", true, "deferred"},
		{"staleness slack: beyond, the next heartbeat counts it", hb(3, 92*MiB, -time.Second, MiB), 0, big(14), 100 * MiB, "", false, "ok"},
		{"staleness slack grows with the heartbeat's age", hb(3, 92*MiB, -time.Second, MiB), time.Second, big(15), 0, "", false, "ok"},
		{"restarted edge: its high-water mark counts", restarted, 7 * time.Second, big(16), 0, "", false, "ok"},
		{"edge never reported a byte: skipped", hb(3, 0, 6*time.Second, 0), 7 * time.Second, big(17), 0, "", false, "ok"},
		{"router without heartbeat times: skipped", noTime, 7 * time.Second, big(18), 0, "", false, "ok"},
		// Two records of 2^62 bytes (refused later as inflated) must not
		// wrap the claimed total below the limits.
		{"never handed out, much, total wrapped by huge records", edgeList{}, 0, wrapping(big(19)), 0, billingapi.ReasonDNSImplausible, false, "rejected"},
		{"heartbeats report 1 MiB, total wrapped by huge records", hb(3, 1*MiB, 6*time.Second, 0), 7 * time.Second, wrapping(big(20)), keep,
			billingapi.ReasonImplausibleHeartbeats, false, "rejected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTestLedger(t, "", Config{DNS: tc.dns})
			tl.setNow(t0.Add(tc.now))
			tl.content.publish("blog", pub.ID, map[string]int64{"big": 1 << 20})
			env := signBatch(t, edge, e0, 1, tc.recs)
			res, err := tl.IngestBatch(ctx, env, netip.Addr{})
			if tc.resend != 0 {
				if !errors.Is(err, errTransient) || reasonOf(err) != "" || counter(tl.metrics.dnsCheck.WithLabelValues("deferred")) != 1 {
					t.Fatalf("first send: %v, want it deferred", err)
				}
				now := t0.Add(tc.now + 10*time.Second)
				tl.setNow(now)
				tc.dns.(*hbDir).beat(now.Add(-time.Second), tc.resend)
				res, err = tl.IngestBatch(ctx, env, netip.Addr{})
			}
			switch {
			case tc.transient:
				if !errors.Is(err, errTransient) || reasonOf(err) != "" {
					t.Fatalf("err %v, want a transient error", err)
				}
			case reasonOf(err) != tc.want || (tc.want == "" && err != nil):
				t.Fatalf("err %v, want reason %q", err, tc.want)
			case err == nil && res.Accepted != len(tc.recs):
				t.Fatalf("accepted %+v", res)
			}
			if got := counter(tl.metrics.dnsCheck.WithLabelValues(tc.metric)); got != 1 {
				t.Fatalf("dns check %s counted %v times", tc.metric, got)
			}
			st, err := tl.Statement(ctx, edge.ID.String())
			switch {
			case tc.want != "" && (err != nil || len(st.Rejected) != 1 || st.Rejected[0].Reason != tc.want || st.Rejected[0].Bytes != claimed(tc.recs)):
				t.Fatalf("statement %+v, %v", st, err)
			case tc.want == "" && err == nil && len(st.Rejected) != 0: // a deferral is no refusal
				t.Fatalf("statement %+v", st)
			}
		})
	}
}

// wrapping appends to rs two records of 2^62 bytes each, whose sum
// overflows an int64.
func wrapping(rs []billingapi.Record) []billingapi.Record {
	last := rs[len(rs)-1]
	for i := range 2 {
		r := last
		r.Serial += uint64(i + 1)
		r.Bytes = 1 << 62
		rs = append(rs, r)
	}
	return rs
}

// hbDir is an EdgeDirectory whose edges send heartbeats (beat).
type hbDir struct {
	mu    sync.Mutex
	edges []EdgeInfo
}

func (d *hbDir) Edges(ctx context.Context) ([]EdgeInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.edges), nil
}

// beat records a heartbeat of every edge at at, reporting bytes (1: the
// same as before) and keeping the highest bytes seen.
func (d *hbDir) beat(at time.Time, bytes uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.edges {
		e := &d.edges[i]
		e.LastHeartbeat = at
		if bytes > 1 {
			e.Bytes = bytes
		}
		e.MaxBytes = max(e.MaxBytes, e.Bytes)
	}
}

// newPartsLedger is a ledger whose DNS router saw edge (key seed
// edgeSeed) answered 3 times and reporting 100 MiB served by t0+6s, with
// the clock at t0+7s and a 1 MiB object "big" of "blog" published by key
// pubSeed. part(n, seq) signs part n (sequence seq) of the edge's batch
// for epoch e0: 60 records of 1 MiB.
func newPartsLedger(t *testing.T, pubSeed, edgeSeed byte) (tl *testLedger, dns *hbDir, edge *identity.Key, e0 int64,
	part func(n int, seq uint64) *identity.Envelope) {
	t.Helper()
	pub := testkit.Key(t, pubSeed)
	edge = testkit.Key(t, edgeSeed)
	e0 = t0.Unix() - 60
	dns = &hbDir{edges: wrapEdges([]dnsrouteapi.EdgeInfo{{Peer: edge.ID.String(), Healthy: true, Answers: 3, IntervalMS: 2000,
		LastHeartbeat: t0.Add(6 * time.Second), Bytes: 100 << 20}})}
	tl = newTestLedger(t, "", Config{DNS: dns})
	tl.setNow(t0.Add(7 * time.Second))
	tl.content.publish("blog", pub.ID, map[string]int64{"big": 1 << 20})
	part = func(n int, seq uint64) *identity.Envelope {
		var rs []billingapi.Record
		for i := range 60 {
			rs = append(rs, rec(seq*1000+uint64(i), "blog", "big", 1<<20, e0))
		}
		b := mustOpen(t, signBatch(t, edge, e0, seq, rs))
		b.Part = n
		return mustSign(t, edge, billingapi.TypeBatch, b)
	}
	return tl, dns, edge, e0, part
}

// TestHeartbeatCheckSumsParts: the parts of an (edge, epoch) are judged
// together against the heartbeats.
func TestHeartbeatCheckSumsParts(t *testing.T) {
	ctx := context.Background()
	tl, dns, edge, e0, part := newPartsLedger(t, 52, 53)
	if res, err := tl.IngestBatch(ctx, part(0, 1), netip.Addr{}); err != nil || res.Accepted != 60 {
		t.Fatalf("part 0: %+v, %v", res, err)
	}
	// 60 MiB more would be 120 MiB for the epoch: more than 100 MiB + 1 MiB.
	// Deferred until a heartbeat after it, then refused.
	p1 := part(1, 2)
	if _, err := tl.IngestBatch(ctx, p1, netip.Addr{}); !errors.Is(err, errTransient) {
		t.Fatalf("part 1: %v, want it deferred", err)
	}
	tl.setNow(t0.Add(17 * time.Second))
	dns.beat(t0.Add(16*time.Second), 1)
	if _, err := tl.IngestBatch(ctx, p1, netip.Addr{}); reasonOf(err) != billingapi.ReasonImplausibleHeartbeats {
		t.Fatalf("part 1: %v, want %s", err, billingapi.ReasonImplausibleHeartbeats)
	}
	// Another epoch is judged alone.
	other := signBatch(t, edge, e0-60, 3, []billingapi.Record{rec(5000, "blog", "big", 1<<20, e0-60)})
	if res, err := tl.IngestBatch(ctx, other, netip.Addr{}); err != nil || res.Accepted != 1 {
		t.Fatalf("other epoch: %+v, %v", res, err)
	}
}

// TestClaimDefersUnknownReaders: a read order of a reader that has not
// reported yet is deferred while it may, and the claimer keeps it.
func TestClaimDefersUnknownReaders(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{PricePerGiBServed: GiB})
	pub, edge, sp := testkit.Key(t, 60), testkit.Key(t, 61), testkit.Key(t, 62)
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 100})
	tl.content.shards["s1"] = pub.ID
	src := &fakeReads{reads: []storageapi.ServedRead{
		{ID: 1, Envelope: readOrder(t, edge, sp.ID.String(), "s1", "a", 10, t0)},
		{ID: 2, Envelope: readOrder(t, edge, sp.ID.String(), "s1", "b", 20, t0)},
	}}
	srv := newHTTPLedger(t, tl)
	c := billingapi.NewClient(srv, nil)
	if n, err := billingapi.ClaimOnce(ctx, c, sp, src); err != nil || n != 0 || src.pruned != 0 {
		t.Fatalf("claim before the edge reported: %d accepted, pruned to %d, %v", n, src.pruned, err)
	}
	if _, err := tl.IngestBatch(ctx, signBatch(t, edge, t0.Unix()-60, 1, []billingapi.Record{rec(1, "blog", "c", 100, t0.Unix()-60)}), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if n, err := billingapi.ClaimOnce(ctx, c, sp, src); err != nil || n != 2 || src.pruned != 2 {
		t.Fatalf("claim after: %d accepted, pruned to %d, %v", n, src.pruned, err)
	}
	tl.setNow(t0.Add(150 * time.Second))
	if _, err := tl.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := tl.Account(ctx, sp.ID.String()); a.Balance != 30 {
		t.Fatalf("storage peer paid %d, want 30", a.Balance)
	}
}

// TestClaimPaysOriginReads: read orders the origin signs (repair, audits,
// billing's own index reads) are paid to the storage peer at once and
// charged to the shard's publisher; another key's are not.
func TestClaimPaysOriginReads(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{PricePerGiBServed: GiB})
	pub, orig, sp, stranger := testkit.Key(t, 63), testkit.Key(t, 64), testkit.Key(t, 65), testkit.Key(t, 66)
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 100})
	tl.content.shards["s1"] = pub.ID
	tl.content.origin = orig.ID
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: 1000, Nonce: "o"})); err != nil {
		t.Fatal(err)
	}
	src := &fakeReads{reads: []storageapi.ServedRead{
		{ID: 1, Envelope: readOrder(t, orig, sp.ID.String(), "s1", "a", 10, t0)},
		{ID: 2, Envelope: readOrder(t, orig, sp.ID.String(), "s1", "b", 20, t0)},
		{ID: 3, Envelope: readOrder(t, stranger, sp.ID.String(), "s1", "c", 40, t0)},
	}}
	c := billingapi.NewClient(newHTTPLedger(t, tl), nil)
	if n, err := billingapi.ClaimOnce(ctx, c, sp, src); err != nil || n != 2 {
		t.Fatalf("claim: %d accepted, %v; want the origin's 2 at once", n, err)
	}
	tl.setNow(t0.Add(150 * time.Second))
	if _, err := tl.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := tl.Account(ctx, sp.ID.String()); a.Balance != 30 {
		t.Fatalf("storage peer paid %d, want 30 (the origin's reads only)", a.Balance)
	}
	if a, _ := tl.Account(ctx, pub.ID.String()); a.Balance != 1000-30 {
		t.Fatalf("publisher balance %d, want %d", a.Balance, 1000-30)
	}
}

// fakeReads is a ServedReadSource in memory.
type fakeReads struct {
	reads  []storageapi.ServedRead
	pruned int64
}

func (f *fakeReads) ServedReads(ctx context.Context, after int64, limit int) ([]storageapi.ServedRead, error) {
	var out []storageapi.ServedRead
	for _, r := range f.reads {
		if r.ID > after && r.ID > f.pruned && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeReads) PruneServedReads(ctx context.Context, upto int64) (int64, error) {
	f.pruned = max(f.pruned, upto)
	return 0, nil
}

var (
	_ billingapi.ServedReadSource = (*fakeReads)(nil)
	_ billingapi.ServedReadSource = (*storage.Server)(nil)
	_ EdgeDirectory               = edgeList{}
)

func TestForfeits(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{})
	liar, other := testkit.Key(t, 70).ID.String(), testkit.Key(t, 71).ID.String()
	e0 := t0.Unix() - 60
	tl.setNow(t0.Add(-time.Hour))
	if err := tl.Forfeit(ctx, other, e0-3600, billingapi.ReasonWrongContent, "an hour ago"); err != nil {
		t.Fatal(err)
	}
	tl.setNow(t0)
	for range 2 { // a second verdict on the same epoch is no new forfeit
		if err := tl.Forfeit(ctx, liar, e0, billingapi.ReasonWrongContent, "served wrong bytes"); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		since time.Time
		want  []billingapi.ForfeitInfo
	}{
		{"recent", t0.Add(-time.Minute), []billingapi.ForfeitInfo{{Edge: liar, Epoch: e0, Reason: billingapi.ReasonWrongContent, At: t0}}},
		{"both", t0.Add(-2 * time.Hour), []billingapi.ForfeitInfo{
			{Edge: other, Epoch: e0 - 3600, Reason: billingapi.ReasonWrongContent, At: t0.Add(-time.Hour)},
			{Edge: liar, Epoch: e0, Reason: billingapi.ReasonWrongContent, At: t0},
		}},
		{"none since", t0.Add(time.Second), []billingapi.ForfeitInfo{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tl.Forfeits(ctx, tc.since)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tc.want, func(a, b billingapi.ForfeitInfo) bool {
				return a.Edge == b.Edge && a.Epoch == b.Epoch && a.Reason == b.Reason && a.At.Equal(b.At)
			}) {
				t.Errorf("forfeits %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestHugeRecordsCannotStopSettlement: a publisher may declare any UnixFS
// file size (OriginContent takes up to 2^62), and an edge may claim it.
// Records above maxRecordBytes are refused as inflated, so that an
// epoch's sums stay within an int64 and settlement, which sums them in
// SQL, keeps paying everyone else.
func TestHugeRecordsCannotStopSettlement(t *testing.T) {
	ctx := context.Background()
	const huge = 1<<62 - 1
	tests := []struct {
		name     string
		bytes    []int64 // the liar's records
		accepted int
	}{
		{"three records of 2^62 bytes", []int64{huge, huge, huge}, 0},
		{"just above the record limit", []int64{maxRecordBytes + 1}, 0},
		{"at the record limit", []int64{maxRecordBytes}, 1},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub, edge, liar := testkit.Key(t, 60), testkit.Key(t, 61), testkit.Key(t, 62+byte(i))
			tl := newTestLedger(t, "", Config{PricePerGiBServed: GiB})
			tl.content.publish("blog", pub.ID, map[string]int64{"small": 1000, "huge": huge})
			e0 := t0.Unix() - 60
			if res, err := tl.IngestBatch(ctx, signBatch(t, edge, e0, 1, []billingapi.Record{rec(1, "blog", "small", 1000, e0)}), netip.Addr{}); err != nil || res.Accepted != 1 {
				t.Fatalf("honest batch: %+v, %v", res, err)
			}
			var recs []billingapi.Record
			for j, n := range tc.bytes {
				recs = append(recs, rec(uint64(10+j), "blog", "huge", n, e0))
			}
			res, err := tl.IngestBatch(ctx, signBatch(t, liar, e0, 1, recs), netip.Addr{})
			if err != nil || res.Accepted != tc.accepted || res.Bytes < 0 {
				t.Fatalf("liar's batch: %+v, %v", res, err)
			}
			for _, r := range res.Rejected {
				if r.Reason != billingapi.ReasonInflated {
					t.Fatalf("liar's record refused as %s, want %s", r.Reason, billingapi.ReasonInflated)
				}
			}
			tl.setNow(t0.Add(time.Minute))
			if _, err := tl.Settle(ctx); err != nil {
				t.Fatalf("settle: %v", err)
			}
			if a, err := tl.Account(ctx, edge.ID.String()); err != nil || a.Balance != 1000 {
				t.Fatalf("honest edge: %+v, %v", a, err)
			}
			if total, err := tl.Total(ctx); err != nil || total != 0 {
				t.Fatalf("sum of balances %d, %v", total, err)
			}
		})
	}
}

// barrierContent is a fakeContent whose Object waits (up to a second) until
// n lookups are in flight: concurrent ingests all pass the checks before
// any of them stores.
type barrierContent struct {
	*fakeContent
	arrive chan struct{}
	n      int
}

func (b *barrierContent) Object(ctx context.Context, name, root, c string) (Object, error) {
	select {
	case b.arrive <- struct{}{}:
	default:
	}
	deadline := time.After(time.Second)
	for len(b.arrive) < b.n {
		select {
		case <-deadline:
			return b.fakeContent.Object(ctx, name, root, c)
		case <-time.After(time.Millisecond):
		}
	}
	return b.fakeContent.Object(ctx, name, root, c)
}

// TestHeartbeatCheckConcurrentParts: parts of one epoch posted at once are
// still judged together against the heartbeats; checked side by side, each
// saw none of the others and all were paid.
func TestHeartbeatCheckConcurrentParts(t *testing.T) {
	ctx := context.Background()
	tl, _, _, _, part := newPartsLedger(t, 70, 71)
	const parts = 4
	tl.Ledger.content = &barrierContent{fakeContent: tl.content, arrive: make(chan struct{}, parts), n: parts}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		bytes int64
	)
	for n := range parts {
		env := part(n, uint64(n+1)) // 60 MiB a part; the heartbeats allow 101 MiB
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := tl.IngestBatch(ctx, env, netip.Addr{}); err == nil {
				mu.Lock()
				bytes += res.Bytes
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if bytes > 101<<20 {
		t.Fatalf("%d MiB accepted for the epoch, heartbeats allow 101 MiB", bytes>>20)
	}
}
