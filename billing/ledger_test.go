package billing

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
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
	tl.content.holdings = []witness.Holding{{Peer: sp.ID, Publisher: pub.ID, Bytes: GiB}} // 10 per epoch
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

// TestClaimNeedsAdmittedReader: a read order earns its storage peer
// something only when an edge the operator admitted signed it; the
// claimer keeps a refused order no longer (it is pruned, refused).
func TestClaimNeedsAdmittedReader(t *testing.T) {
	ctx := context.Background()
	tl := newTestLedger(t, "", Config{PricePerGiBServed: GiB})
	pub, edge, sp := testkit.Key(t, 60), testkit.Key(t, 61), testkit.Key(t, 62)
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 100})
	tl.content.shards["s1"] = pub.ID
	src := &fakeReads{reads: []storageapi.ServedRead{
		{ID: 1, Envelope: readOrder(t, edge, sp.ID.String(), "s1", "a", 10, t0)},
	}}
	srv := newHTTPLedger(t, tl)
	c := billingapi.NewClient(srv, nil)
	if n, err := billingapi.ClaimOnce(ctx, c, sp, src); err != nil || n != 0 || src.pruned != 1 {
		t.Fatalf("claim of a reader not admitted: %d accepted, pruned to %d, %v", n, src.pruned, err)
	}
	tl.admit(t, edge)
	src.reads = append(src.reads, storageapi.ServedRead{ID: 2, Envelope: readOrder(t, edge, sp.ID.String(), "s1", "b", 20, t0)})
	if n, err := billingapi.ClaimOnce(ctx, c, sp, src); err != nil || n != 1 || src.pruned != 2 {
		t.Fatalf("claim after the edge was admitted: %d accepted, pruned to %d, %v", n, src.pruned, err)
	}
	tl.setNow(t0.Add(150 * time.Second))
	if _, err := tl.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := tl.Account(ctx, sp.ID.String()); a.Balance != 20 {
		t.Fatalf("storage peer paid %d, want 20", a.Balance)
	}
	st, err := tl.Statement(ctx, sp.ID.String())
	if err != nil || !slices.ContainsFunc(st.Rejected, func(r billingapi.Rejected) bool { return r.Reason == billingapi.ReasonUnknownReader }) {
		t.Fatalf("statement %+v, %v: want the first order refused as unknown_reader", st, err)
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
			tl.admit(t, edge, liar)
			e0 := t0.Unix() - 60
			tl.vouch(edge.ID, e0, 1000, "name:blog")
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
