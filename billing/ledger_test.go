package billing

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/topcdn/topcdn/storage"
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
	pub, sp := testKey(t, 40), testKey(t, 41)
	tl.content.holdings = []Holding{{Peer: sp.ID, Publisher: pub.ID, Bytes: GiB}} // 10 per epoch
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, TypeDeposit, Deposit{Account: pub.ID.String(), Amount: 25, Nonce: "a"})); err != nil {
		t.Fatal(err)
	}
	// Deposits: once per nonce; another nonce's content conflicts; only the
	// operator signs them.
	if a, err := tl.Deposit(ctx, mustSign(t, tl.operator, TypeDeposit, Deposit{Account: pub.ID.String(), Amount: 25, Nonce: "a"})); err != nil || a.Balance != 25 {
		t.Fatalf("resent deposit: %+v, %v", a, err)
	}
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, TypeDeposit, Deposit{Account: pub.ID.String(), Amount: 26, Nonce: "a"})); !errors.Is(err, ErrConflict) {
		t.Fatalf("nonce reused for another amount: %v", err)
	}
	if _, err := tl.Deposit(ctx, mustSign(t, pub, TypeDeposit, Deposit{Account: pub.ID.String(), Amount: 1000, Nonce: "b"})); reasonOf(err) != ReasonSignature {
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
	if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, TypeDeposit, Deposit{Account: pub.ID.String(), Amount: 100, Nonce: "c"})); err != nil {
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
	edges []EdgeInfo
	err   error
}

func (e edgeList) Edges(ctx context.Context) ([]EdgeInfo, error) { return e.edges, e.err }

func TestDNSCheck(t *testing.T) {
	ctx := context.Background()
	pub, edge := testKey(t, 50), testKey(t, 51)
	e0 := t0.Unix() - 60
	big := func(seq uint64) []Record { // 100 MiB in 100 responses of 1 MiB
		var rs []Record
		for i := range 100 {
			rs = append(rs, rec(seq*1000+uint64(i), "blog", "big", 1<<20, e0))
		}
		return rs
	}
	tests := []struct {
		name   string
		dns    EdgeDirectory
		recs   []Record
		want   Reason
		metric string
	}{
		{"unconfigured", nil, big(1), "", "unconfigured"},
		{"handed out", edgeList{edges: []EdgeInfo{{Peer: edge.ID.String(), Healthy: true, Answers: 3}}}, big(2), "", "ok"},
		{"never handed out, little", edgeList{}, big(3)[:10], "", "ok"},
		{"never handed out, much", edgeList{edges: []EdgeInfo{{Peer: edge.ID.String(), Answers: 0}}}, big(4), ReasonDNSImplausible, "rejected"},
		{"unlisted, much", edgeList{}, big(5), ReasonDNSImplausible, "rejected"},
		{"router down", edgeList{err: errors.New("down")}, big(6), "", "skipped"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTestLedger(t, "", Config{DNS: tc.dns})
			tl.content.publish("blog", pub.ID, map[string]int64{"big": 1 << 20})
			_, err := tl.IngestBatch(ctx, signBatch(t, edge, e0, 1, tc.recs), netip.Addr{})
			if reasonOf(err) != tc.want || (tc.want == "" && err != nil) {
				t.Fatalf("err %v, want reason %q", err, tc.want)
			}
			if got := counter(tl.metrics.dnsCheck.WithLabelValues(tc.metric)); got != 1 {
				t.Fatalf("dns check %s counted %v times", tc.metric, got)
			}
		})
	}
}

// TestClaimDefersUnknownReaders: a read order of a reader that has not
// reported yet is deferred while it may, and the claimer keeps it.
func TestClaimDefersUnknownReaders(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{PricePerGiBServed: GiB})
	pub, edge, sp := testKey(t, 60), testKey(t, 61), testKey(t, 62)
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 100})
	tl.content.shards["s1"] = pub.ID
	src := &fakeReads{reads: []storage.ServedRead{
		{ID: 1, Envelope: readOrder(t, edge, sp.ID.String(), "s1", "a", 10, t0)},
		{ID: 2, Envelope: readOrder(t, edge, sp.ID.String(), "s1", "b", 20, t0)},
	}}
	srv := newHTTPLedger(t, tl)
	c := NewClient(srv, nil)
	if n, err := ClaimOnce(ctx, c, sp, src); err != nil || n != 0 || src.pruned != 0 {
		t.Fatalf("claim before the edge reported: %d accepted, pruned to %d, %v", n, src.pruned, err)
	}
	if _, err := tl.IngestBatch(ctx, signBatch(t, edge, t0.Unix()-60, 1, []Record{rec(1, "blog", "c", 100, t0.Unix()-60)}), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if n, err := ClaimOnce(ctx, c, sp, src); err != nil || n != 2 || src.pruned != 2 {
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

// fakeReads is a ServedReadSource in memory.
type fakeReads struct {
	reads  []storage.ServedRead
	pruned int64
}

func (f *fakeReads) ServedReads(ctx context.Context, after int64, limit int) ([]storage.ServedRead, error) {
	var out []storage.ServedRead
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
	_ ServedReadSource = (*fakeReads)(nil)
	_ ServedReadSource = (*storage.Server)(nil)
	_ EdgeDirectory    = edgeList{}
)
