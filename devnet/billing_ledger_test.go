package devnet

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// storageReads returns each storage peer's read orders served (its
// topcdn_storage_reads_total{result="ok"}), by peer ID.
func storageReads(t *testing.T, info Info) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, s := range info.Storage {
		_, body := testkit.Get(t, s.URL+"/metrics", "")
		for line := range strings.Lines(string(body)) {
			if rest, ok := strings.CutPrefix(line, `topcdn_storage_reads_total{result="ok"} `); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				if err != nil {
					t.Fatalf("%s/metrics: %q: %v", s.URL, line, err)
				}
				out[s.PeerID] = int64(f)
			}
		}
	}
	return out
}

// shardHolders returns the storage peers that hold a data shard (one of
// the first k of a segment) of any of roots, from the origin's signed
// manifests.
func shardHolders(t *testing.T, info Info, roots ...string) map[string]bool {
	t.Helper()
	origin, err := peer.Decode(info.Origin.PeerID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, root := range roots {
		var env identity.Envelope
		testkit.GetJSON(t, info.Origin.URL+"/api/v1/manifests/"+root, &env)
		m, err := erasure.OpenManifest(&env, origin)
		if err != nil {
			t.Fatalf("manifest of %s: %v", root, err)
		}
		for _, seg := range m.Segments {
			for _, sh := range seg.Shards[:m.DataShards] {
				out[sh.Peer] = true
			}
		}
	}
	return out
}

// ledger is what billing says of every devnet party.
type ledger struct {
	accounts   []billingapi.Account
	statements map[string]*billingapi.Statement // by peer ID: edges, storage peers, publisher
}

// readLedger reads the balances and the statements of the devnet's edges,
// storage peers and publisher.
func readLedger(t *testing.T, bc *billingapi.Client, info Info) *ledger {
	t.Helper()
	ctx := context.Background()
	l := &ledger{statements: map[string]*billingapi.Statement{}}
	var err error
	if l.accounts, err = bc.Accounts(ctx); err != nil {
		t.Fatalf("accounts: %v", err)
	}
	ids := []string{info.PublisherID}
	for _, e := range slices.Concat(info.Edges, info.Storage) {
		ids = append(ids, e.PeerID)
	}
	for _, id := range ids {
		s, err := bc.Statement(ctx, id)
		if err != nil {
			t.Fatalf("statement of %s: %v", id, err)
		}
		l.statements[id] = s
	}
	return l
}

// entryEpoch is the epoch a served entry pays for: its own, or for records
// held by the upstream-read check and paid by a later settlement, the one
// its memo names.
var entryEpoch = regexp.MustCompile(`in epoch (\d+)`)

// paidFor returns the bytes of account's entries of kind, per epoch the
// bytes were served or read in.
func (l *ledger) paidFor(account, kind string) map[int64]int64 {
	out := map[int64]int64{}
	s := l.statements[account]
	if s == nil {
		return out
	}
	for _, e := range s.Entries {
		if e.Kind != kind || e.Amount <= 0 {
			continue
		}
		epoch := e.Epoch
		if m := entryEpoch.FindStringSubmatch(e.Memo); m != nil {
			epoch, _ = strconv.ParseInt(m[1], 10, 64)
		}
		out[epoch] += e.Bytes
	}
	return out
}

// complete says what settlement has not done yet, "" when it is done:
// each of epochs (epochs the edges served bytes in) settled, which shows
// as a served entry of the publisher; no record of them held; every
// storage peer that served reads paid for reads.
func (l *ledger) complete(epochs []int64, reads map[string]int64) string {
	if l == nil {
		return "no ledger read"
	}
	var pub *billingapi.Statement
	for _, a := range l.accounts {
		if a.Kind == "publisher" {
			pub = l.statements[a.ID]
		}
	}
	if pub == nil {
		return "no publisher account"
	}
	for _, ep := range epochs {
		if !slices.ContainsFunc(pub.Entries, func(e billingapi.Entry) bool { return e.Epoch == ep && e.Kind == "served" }) {
			return fmt.Sprintf("epoch %d not settled (no served entry of the publisher)", ep)
		}
	}
	for id, s := range l.statements {
		for _, d := range s.Deferred {
			if d.Epoch <= slices.Max(epochs) {
				return fmt.Sprintf("edge %s: %d bytes of epoch %d held (no read order backs them yet)", short(id), d.Bytes, d.Epoch)
			}
		}
	}
	for id, n := range reads {
		if n > 0 && len(l.paidFor(id, "storage_read")) == 0 {
			return fmt.Sprintf("storage peer %s served %d reads but earned nothing for reads", short(id), n)
		}
	}
	return ""
}

// checkLedger checks the balances: the publisher paid what the edges and
// storage peers earned, every edge that served and every storage peer read
// earned, balances sum to zero, and settling again pays nothing.
func checkLedger(t *testing.T, ctx context.Context, bc *billingapi.Client, info Info, led *ledger,
	served map[string]map[int64]int64, epochs []int64, reads map[string]int64, dataHolders map[string]bool) {
	var sum, operators, treasury, publisher int64
	kinds := map[string]int{}
	for _, a := range led.accounts {
		sum += a.Balance
		kinds[a.Kind]++
		switch a.Kind {
		case "edge", "storage":
			operators += a.Balance
		case "treasury":
			treasury = a.Balance
		case "publisher":
			if a.ID != info.PublisherID {
				t.Errorf("a publisher account %s that is not the devnet's %s", a.ID, info.PublisherID)
			}
			publisher = a.Balance
		default:
			t.Errorf("account %s of kind %q", a.ID, a.Kind)
		}
	}
	debited := DefaultDeposit - publisher
	t.Logf("ledger: publisher debited %d, edges and storage peers credited %d, treasury %d, sum of %d balances %d (%v)",
		debited, operators, treasury, len(led.accounts), sum, kinds)
	if sum != 0 {
		t.Errorf("balances sum to %d, want 0", sum)
	}
	if treasury != -DefaultDeposit {
		t.Errorf("treasury %d, want -%d (the deposit)", treasury, int64(DefaultDeposit))
	}
	if debited <= 0 || debited != operators {
		t.Errorf("publisher debited %d, edges and storage peers credited %d", debited, operators)
	}
	balance := map[string]int64{}
	for _, a := range led.accounts {
		balance[a.ID] = a.Balance
	}
	for _, e := range info.Edges {
		var n int64
		for _, ep := range epochs {
			n += served[e.PeerID][ep]
		}
		if n > 0 && (balance[e.PeerID] <= 0 || len(led.paidFor(e.PeerID, "served")) == 0) {
			t.Errorf("edge %s (%s) served %d bytes in the traffic epochs but its balance is %d", e.City, short(e.PeerID), n, balance[e.PeerID])
		}
	}
	// Edges read the k data shards of a segment and parity only to
	// rebuild a missing one: a peer holding only parity shards is not read
	// while every peer is up.
	var read, notRead []string
	for _, s := range info.Storage {
		if reads[s.PeerID] == 0 {
			notRead = append(notRead, short(s.PeerID))
			if dataHolders[s.PeerID] {
				t.Errorf("storage peer %s holds a data shard of the site but served no read order", short(s.PeerID))
			}
			continue
		}
		read = append(read, short(s.PeerID))
		if balance[s.PeerID] <= 0 || len(led.paidFor(s.PeerID, "storage_read")) == 0 {
			t.Errorf("storage peer %s served %d reads but its balance is %d, read entries %v",
				short(s.PeerID), reads[s.PeerID], balance[s.PeerID], led.paidFor(s.PeerID, "storage_read"))
		}
	}
	t.Logf("storage peers read and credited: %d %v; not read: %d %v, each holding parity shards only (%d peers hold data shards)",
		len(read), read, len(notRead), notRead, len(dataHolders))
	// Settle twice in a row: the second pays nothing. An epoch that closes
	// between the two calls is settled by the second; then try again.
	for try := 0; ; try++ {
		if _, err := bc.Settle(ctx); err != nil {
			t.Fatalf("settle: %v", err)
		}
		again, err := bc.Settle(ctx)
		if err != nil {
			t.Fatalf("settle again: %v", err)
		}
		if len(again.Epochs) == 0 || try == 2 {
			if again.Paid != 0 || len(again.Epochs) != 0 {
				t.Errorf("a second settle settled %v and paid %d, want nothing", again.Epochs, again.Paid)
			}
			break
		}
	}
}
