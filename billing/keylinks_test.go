package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// signLink signs a link of key to account at at, with the consent signed
// by consenter (nil: no consent); edit, if set, changes the link (after
// the consent is signed, before the account signs).
func signLink(t testing.TB, account, key, consenter *identity.Key, at time.Time, edit func(*billingapi.KeyLink)) *identity.Envelope {
	t.Helper()
	kl := billingapi.KeyLink{Account: account.ID.String(), Key: key.ID.String(), Time: at.UTC()}
	if consenter != nil {
		kl.Consent = mustSign(t, consenter, billingapi.TypeKeyConsent, billingapi.KeyConsent{Account: kl.Account, Key: kl.Key, Time: at.UTC()})
	}
	if edit != nil {
		edit(&kl)
	}
	return mustSign(t, account, billingapi.TypeKeyLink, kl)
}

// TestKeyLinks: a link needs the account's signature and the key's
// consent to this very link, a time within the skew, and no chain; a key
// has one open link; only the account unlinks, and neither a link nor an
// unlink can be sent again later. Each row asserts the status, the reason
// and who pays for the key afterwards (GET /api/v1/accounts/{key}).
func TestKeyLinks(t *testing.T) { testKeyLinks(t, func(*testing.T) string { return "" }) }

// TestKeyLinksPostgres runs the same rows on PostgreSQL.
func TestKeyLinksPostgres(t *testing.T) { testKeyLinks(t, pgDSN) }

func testKeyLinks(t *testing.T, dsn func(*testing.T) string) {
	tl := newTestLedger(t, dsn(t), Config{})
	srv := newHTTPLedger(t, tl)
	acct, key, other, third, stranger := testkit.Key(t, 70), testkit.Key(t, 71), testkit.Key(t, 72), testkit.Key(t, 73), testkit.Key(t, 74)
	now := tl.clock()
	next := tl.epochOf(now) + 60
	linkPath := func(a *identity.Key) string { return "/api/v1/accounts/" + a.ID.String() + "/keys" }
	unlinkPath := func(a, k *identity.Key) string { return linkPath(a) + "/" + k.ID.String() }
	good := signLink(t, acct, key, key, now, nil)
	unlink := func(signer, a, k *identity.Key, at time.Time) *identity.Envelope {
		return mustSign(t, signer, billingapi.TypeKeyUnlink, billingapi.KeyUnlink{Account: a.ID.String(), Key: k.ID.String(), Time: at.UTC()})
	}
	var lateUnlink *identity.Envelope // signed in setup, once the link exists
	tests := []struct {
		name, method, path string
		env                *identity.Envelope
		setup              func()
		code               int
		contains           string
		payerOf            *identity.Key // whose payer is checked after
		payer              *identity.Key // nil: none
	}{
		{"link without consent", "POST", linkPath(acct), signLink(t, acct, key, nil, now, nil), nil,
			403, `"reason": "bad_signature"`, key, nil},
		{"consent signed by another key", "POST", linkPath(acct), signLink(t, acct, key, stranger, now, nil), nil,
			403, "the key itself must sign it", key, nil},
		{"consent given to another account", "POST", linkPath(stranger), signLink(t, stranger, key, nil, now, func(kl *billingapi.KeyLink) {
			kl.Consent = mustSign(t, key, billingapi.TypeKeyConsent, billingapi.KeyConsent{Account: acct.ID.String(), Key: key.ID.String(), Time: now})
		}), nil, 403, "not to this link", key, nil},
		{"link signed by another than the account", "POST", linkPath(acct), signLink(t, stranger, key, key, now, func(kl *billingapi.KeyLink) {
			kl.Account = acct.ID.String()
		}), nil, 403, "the account must sign it", key, nil},
		{"link sent for another account", "POST", linkPath(stranger), good, nil, 422, "sent for account", key, nil},
		{"link signed too long ago", "POST", linkPath(acct), signLink(t, acct, key, key, now.Add(-6*time.Minute), nil), nil,
			422, "from billing's clock", key, nil},
		{"consent signed too long ago", "POST", linkPath(acct), signLink(t, acct, key, nil, now, func(kl *billingapi.KeyLink) {
			kl.Consent = mustSign(t, key, billingapi.TypeKeyConsent, billingapi.KeyConsent{Account: acct.ID.String(), Key: key.ID.String(),
				Time: now.Add(-time.Hour)})
		}), nil, 422, "key consent signed at", key, nil},
		{"account links itself", "POST", linkPath(acct), signLink(t, acct, acct, acct, now, nil), nil, 422, "cannot link itself", acct, nil},
		{"link", "POST", linkPath(acct), good, nil, 200, `"from_epoch": ` + strconv.FormatInt(next, 10), key, acct},
		{"same link again", "POST", linkPath(acct), good, nil, 200, `"from_epoch": ` + strconv.FormatInt(next, 10), key, acct},
		{"key linked to another account", "POST", linkPath(other), signLink(t, other, key, key, now, nil), nil,
			409, "linked to another account", key, acct},
		{"linked key links a key (chain)", "POST", linkPath(key), signLink(t, key, third, third, now, nil), nil,
			409, "itself a linked key", third, nil},
		{"account with linked keys is linked (chain)", "POST", linkPath(other), signLink(t, other, acct, acct, now, nil), nil,
			409, "pays for linked keys", acct, nil},
		{"unlink signed by the key", "DELETE", unlinkPath(acct, key), unlink(key, acct, key, now.Add(time.Second)), nil,
			403, "the account must sign it", key, acct},
		{"unlink of a key not linked", "DELETE", unlinkPath(acct, third), unlink(acct, acct, third, now.Add(time.Second)), nil,
			404, "no open link", third, nil},
		{"unlink signed before the link", "DELETE", unlinkPath(acct, key), unlink(acct, acct, key, now.Add(-time.Second)), nil,
			422, "before its link", key, acct},
		{"unlink", "DELETE", unlinkPath(acct, key), nil, func() { lateUnlink = unlink(acct, acct, key, now.Add(time.Second)) },
			200, `"until_epoch": ` + strconv.FormatInt(next, 10), key, nil},
		{"the old link sent again", "POST", linkPath(acct), good, nil, 422, "before its last unlink", key, nil},
		{"the unlink sent again", "DELETE", unlinkPath(acct, key), nil, nil, 404, "no open link", key, nil},
		{"the key links to another account", "POST", linkPath(other), signLink(t, other, key, key, now.Add(2*time.Second), nil), nil,
			200, `"from_epoch": ` + strconv.FormatInt(next, 10), key, other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			env := tc.env
			if env == nil {
				env = lateUnlink
			}
			body, err := json.Marshal(env)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(tc.method, srv+tc.path, bytes.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(got), tc.contains) {
				t.Fatalf("%d %s, want %d containing %q", resp.StatusCode, got, tc.code, tc.contains)
			}
			a, err := tl.Account(context.Background(), tc.payerOf.ID.String())
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			if tc.payer != nil {
				want = tc.payer.ID.String()
			}
			if a.Payer != want {
				t.Fatalf("payer of %s is %q, want %q", tc.payerOf.ID, a.Payer, want)
			}
		})
	}
	links, err := billingapi.NewClient(srv, nil).KeyLinks(context.Background(), acct.ID.String())
	if err != nil || len(links) != 1 || links[0].Key != key.ID.String() || links[0].UntilEpoch != next {
		t.Fatalf("account's links: %+v, %v; want the one ended link", links, err)
	}
}

// TestKeyLinkSettlement: settlement debits the account for a linked key's
// charges from the link's first epoch on (not before), names the key in
// the account's entries, and stops after an unlink; Suspended lists the
// keys of a suspended account while they are linked. An account that
// links a victim's key without the victim's consent neither pays for it
// nor drags it into its suspension: the victim's charges, balance and
// standing are what they would be without the attempt.
func TestKeyLinkSettlement(t *testing.T) {
	testKeyLinkSettlement(t, func(*testing.T) string { return "" })
}

// TestKeyLinkSettlementPostgres runs the same on PostgreSQL.
func TestKeyLinkSettlementPostgres(t *testing.T) { testKeyLinkSettlement(t, pgDSN) }

func testKeyLinkSettlement(t *testing.T, dsn func(*testing.T) string) {
	ctx := context.Background()
	// A GiB held costs 10 per 60 s epoch.
	tl := newTestLedger(t, dsn(t), Config{PricePerGiBMonthStored: 43200 * 10, Grace: 90 * time.Second})
	acct, docs, blog, victim, mallory, mallory2, sp := testkit.Key(t, 75), testkit.Key(t, 76), testkit.Key(t, 77), testkit.Key(t, 78),
		testkit.Key(t, 79), testkit.Key(t, 80), testkit.Key(t, 81)
	for _, k := range []*identity.Key{docs, blog, victim, mallory} {
		tl.content.holdings = append(tl.content.holdings, witness.Holding{Peer: sp.ID, Publisher: k.ID, Bytes: GiB})
	}
	deposit := func(k *identity.Key, n int64) {
		t.Helper()
		if _, err := tl.Deposit(ctx, mustSign(t, tl.operator, billingapi.TypeDeposit,
			billingapi.Deposit{Account: k.ID.String(), Amount: n, Nonce: "d-" + k.ID.String()})); err != nil {
			t.Fatal(err)
		}
	}
	deposit(acct, 15)
	deposit(docs, 1000)
	deposit(blog, 1000)
	deposit(victim, 1000)
	e0 := t0.Unix()

	tl.setNow(t0.Add(10 * time.Second))
	if li, err := tl.LinkKey(ctx, acct.ID.String(), signLink(t, acct, docs, docs, tl.clock(), nil)); err != nil || li.FromEpoch != e0+60 {
		t.Fatalf("link docs: %+v, %v; want from epoch %d", li, err, e0+60)
	}
	// Mallory, out of funds, tries to have the victim's key paid by her
	// account: without the victim's consent, and with a consent her
	// other key signed.
	for _, consenter := range []*identity.Key{nil, mallory2} {
		if _, err := tl.LinkKey(ctx, mallory.ID.String(), signLink(t, mallory, victim, consenter, tl.clock(), nil)); reasonOf(err) != billingapi.ReasonSignature {
			t.Fatalf("mallory links the victim's key (consent by %v): %v; want bad_signature", consenter, err)
		}
	}

	tl.setNow(t0.Add(240 * time.Second)) // epochs e0, e0+60, e0+120 closed
	if res, err := tl.Settle(ctx); err != nil || len(res.Epochs) != 3 {
		t.Fatalf("settle: %+v, %v", res, err)
	}
	epochsOf := func(id *identity.Key, memo string) []int64 {
		t.Helper()
		var out []int64
		for _, e := range balancedStatement(t, tl, id.ID.String()).Entries {
			if e.Kind == "stored" && strings.Contains(e.Memo, memo) {
				out = append(out, e.Epoch)
			}
		}
		return out
	}
	checkEpochs := func(id *identity.Key, memo string, want ...int64) {
		t.Helper()
		if got := epochsOf(id, memo); !slices.Equal(got, want) {
			t.Fatalf("%s paid for %q in epochs %v, want %v", id.ID, memo, got, want)
		}
	}
	checkEpochs(docs, docs.ID.String(), e0)                         // before the link: the key itself
	checkEpochs(acct, docs.ID.String()+"'s content", e0+60, e0+120) // from the link's epoch: the account
	checkEpochs(acct, "paid by its account "+acct.ID.String(), e0+60, e0+120)
	checkEpochs(blog, blog.ID.String(), e0, e0+60, e0+120)       // not linked
	checkEpochs(victim, victim.ID.String(), e0, e0+60, e0+120)   // as if Mallory had not tried
	checkEpochs(mallory, mallory.ID.String(), e0, e0+60, e0+120) // her own charges only
	if n := len(epochsOf(mallory, victim.ID.String())); n != 0 {
		t.Fatalf("mallory paid %d entries of the victim's content", n)
	}
	balances := func(want map[*identity.Key]int64) {
		t.Helper()
		for k, b := range want {
			if a, err := tl.Account(ctx, k.ID.String()); err != nil || a.Balance != b {
				t.Fatalf("balance of %s: %+v, %v; want %d", k.ID, a, err, b)
			}
		}
		if total, err := tl.Total(ctx); err != nil || total != 0 {
			t.Fatalf("sum of balances %d, %v", total, err)
		}
	}
	balances(map[*identity.Key]int64{acct: 15 - 20, docs: 1000 - 10, victim: 1000 - 30, mallory: -30})

	suspended := func(want ...*identity.Key) {
		t.Helper()
		got, err := tl.Suspended(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, k := range want {
			ids = append(ids, k.ID.String())
		}
		slices.Sort(ids)
		if !slices.Equal(got, ids) {
			t.Fatalf("suspended %v, want %v", got, ids)
		}
	}
	tl.setNow(t0.Add(400 * time.Second)) // the grace after settlement is over
	suspended(acct, docs, mallory)       // docs has funds of its own, but acct pays for it

	tl.setNow(t0.Add(410 * time.Second)) // epoch e0+360: docs is paid by acct until e0+420
	if li, err := tl.UnlinkKey(ctx, acct.ID.String(), docs.ID.String(), mustSign(t, acct, billingapi.TypeKeyUnlink,
		billingapi.KeyUnlink{Account: acct.ID.String(), Key: docs.ID.String(), Time: tl.clock()})); err != nil || li.UntilEpoch != e0+420 {
		t.Fatalf("unlink: %+v, %v; want until %d", li, err, e0+420)
	}
	suspended(acct, docs, mallory) // the link still covers this epoch

	tl.setNow(t0.Add(600 * time.Second)) // epochs e0+180 … e0+480 closed
	if res, err := tl.Settle(ctx); err != nil || len(res.Epochs) != 6 {
		t.Fatalf("settle: %+v, %v", res, err)
	}
	checkEpochs(docs, docs.ID.String(), e0, e0+420, e0+480)
	checkEpochs(acct, docs.ID.String()+"'s content", e0+60, e0+120, e0+180, e0+240, e0+300, e0+360)
	balances(map[*identity.Key]int64{acct: 15 - 60, docs: 1000 - 30, victim: 1000 - 90, mallory: -90})
	suspended(acct, mallory) // the link has ended
}
