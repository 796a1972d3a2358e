package origin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
)

// TestBillingLog: uploads and name moves are logged in the transaction
// that makes them (a change that fails logs nothing, and a log that cannot
// be written fails the change); the log is served in pages signed with the
// origin's key.
func TestBillingLog(t *testing.T) { pgtest.Dialects(t, testBillingLog) }

func testBillingLog(t *testing.T, dsn string) {
	ctx := context.Background()
	o := newTestOriginOn(t, dsn)
	srv := httptest.NewServer(o.Handler())
	defer srv.Close()
	v1, v2 := newTestDAG(t, "one", 2), newTestDAG(t, "two", 2)
	for _, d := range []testDAG{v1, v2} {
		if _, err := ingest(t, o, []cid.Cid{d.root}, d.blocks...); err != nil {
			t.Fatal(err)
		}
	}
	alice := testkit.Key(t, 1)
	aliceName := ipns.NameFromPeer(alice.ID)
	future := time.Now().Add(time.Hour)
	claim := func(root cid.Cid, seq uint64) error {
		_, err := o.ClaimName(ctx, "blog", aliceName, record(t, alice, root, seq, future, "blog"))
		return err
	}
	if err := claim(v1.root, 1); err != nil {
		t.Fatal(err)
	}
	if err := claim(v1.root, 1); err != nil { // the same record again: no change, no event
		t.Fatal(err)
	}
	if err := claim(v2.root, 1); err == nil { // refused: no event
		t.Fatal("a record with an old sequence was accepted")
	}
	// A log that cannot be written (here: is not there) fails the change
	// it records.
	if _, err := o.db.ExecContext(ctx, `ALTER TABLE billing_log RENAME TO no_log`); err != nil {
		t.Fatal(err)
	}
	if err := claim(v2.root, 2); err == nil {
		t.Fatal("name moved without its billing event")
	}
	if ni, err := o.LookupName(ctx, "blog"); err != nil || ni.CID != v1.root.String() {
		t.Fatalf("after a failed log write the name points to %+v, %v; want v1", ni, err)
	}
	if _, err := o.db.ExecContext(ctx, `ALTER TABLE no_log RENAME TO billing_log`); err != nil {
		t.Fatal(err)
	}
	if err := claim(v2.root, 2); err != nil {
		t.Fatal(err)
	}

	pub := testPublisher(t).ID.String()
	want := []originapi.BillingEvent{
		{Kind: originapi.EventUpload, Root: v1.root.String(), Publisher: pub},
		{Kind: originapi.EventUpload, Root: v2.root.String(), Publisher: pub},
		{Kind: originapi.EventName, Name: "blog", IPNS: aliceName.String(), Publisher: alice.ID.String(), Root: v1.root.String(), Seq: 1},
		{Kind: originapi.EventName, Name: "blog", IPNS: aliceName.String(), Publisher: alice.ID.String(), Root: v2.root.String(), Seq: 2},
	}
	page := func(query string) (*originapi.BillingLog, int) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/api/v1/billing/log" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, resp.StatusCode
		}
		var env identity.Envelope
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			t.Fatal(err)
		}
		var p originapi.BillingLog
		signer, err := env.Open(originapi.TypeBillingLog, &p)
		if err != nil || signer != o.ID().ID {
			t.Fatalf("page signed by %s (%v), want the origin %s", signer, err, o.ID().ID)
		}
		return &p, http.StatusOK
	}
	var got []originapi.BillingEvent
	for since := int64(0); ; {
		p, code := page("?limit=3&since=" + strconv.FormatInt(since, 10))
		if code != http.StatusOK {
			t.Fatalf("page after %d: HTTP %d", since, code)
		}
		if p.Since != since || p.Last != int64(len(want)) || len(p.Events) > 3 {
			t.Fatalf("page after %d: %+v", since, p)
		}
		if len(p.Events) == 0 {
			break
		}
		got = append(got, p.Events...)
		since = p.To
	}
	if len(got) != len(want) {
		t.Fatalf("%d events: %+v; want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.ID != int64(i+1) || g.At.IsZero() {
			t.Errorf("event %d: ID %d, at %s", i, g.ID, g.At)
		}
		g.ID, g.At, g.TTLSeconds = 0, time.Time{}, 0
		if g != w {
			t.Errorf("event %d: %+v\nwant      %+v", i, g, w)
		}
	}
	if p, _ := page(""); p == nil || len(p.Events) != len(want) {
		t.Fatalf("the whole log by default: %+v", p)
	}
	for _, q := range []string{"?limit=10001", "?limit=0", "?since=-1", "?since=x"} {
		if _, code := page(q); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", q, code)
		}
	}
}
