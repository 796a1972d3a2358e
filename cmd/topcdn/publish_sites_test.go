package main

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billing"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
)

// testBilling runs a billing ledger in this process over HTTP and returns
// its URL and operator key.
func testBilling(t *testing.T) (string, *identity.Key) {
	t.Helper()
	ctx := context.Background()
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := billing.OpenDB(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := billing.New(ctx, db, noOrigin{}, op.ID, billing.Config{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(l.Handler(prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return srv.URL, op
}

var rootLine = regexp.MustCompile(`(?m)^root +(\S+)$`)

// TestPublishSitesAndRollback is the publisher's workflow end to end,
// through an origin that checks funds at a billing service: one keystore
// whose account alone is funded publishes two sites, each with its own
// key, created on its first publish and linked to the account; a site is
// published twice and rolled back to its first version; a --no-name upload
// leaves the name alone, and pointing the name at it needs --force, since
// the name never pointed there. A rollback and a purge sign with the
// site's key in the keystore, never a new one.
func TestPublishSitesAndRollback(t *testing.T) {
	clearPublishEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	billingURL, operator := testBilling(t)
	bc := billingapi.NewClient(billingURL, nil)
	o, originURL := testOrigin(t, origin.Config{Funds: billingFunds{bc}, Billing: billingURL})
	ks := filepath.Join(dir, "keys")
	publish := func(t *testing.T, args ...string) (root, stdout, stderr string) {
		t.Helper()
		stdout, stderr, err := runTopcdn(t, append([]string{"publish", "--keystore", ks, "--origin", originURL}, args...)...)
		if err != nil {
			t.Fatalf("publish %v: %v\n%s", args, err, stderr)
		}
		m := rootLine.FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("publish %v printed no root:\n%s", args, stdout)
		}
		return m[1], stdout, stderr
	}
	pointsAt := func(t *testing.T, name, root string, seq uint64) {
		t.Helper()
		ni, err := o.LookupName(ctx, name)
		if err != nil || ni.CID != root || ni.Sequence != seq {
			t.Fatalf("%s -> %+v, %v; want %s at sequence %d", name, ni, err, root, seq)
		}
	}

	// The account is created ahead with the first site's key, and funded.
	if _, stderr, err := runTopcdn(t, "keygen", "--name", "docs", "--keystore", ks); err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	account, err := identity.Load(filepath.Join(ks, "account.key"))
	if err != nil {
		t.Fatal(err)
	}
	docsKey, err := identity.Load(filepath.Join(ks, "sites", "docs.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Deposit(ctx, operator, account.ID.String(), 1000, ""); err != nil {
		t.Fatal(err)
	}

	var v1, v2 string
	t.Run("v1: the site key is linked to the funded account", func(t *testing.T) {
		var stdout, stderr string
		v1, stdout, stderr = publish(t, writeSite(t, dir, "v1", "version 1"), "--name", "docs")
		if !strings.Contains(stderr, "linked key for docs to account "+account.ID.String()) {
			t.Errorf("stderr does not tell the link:\n%s", stderr)
		}
		for _, s := range []string{"preview  http://", "site     http://docs.cdn.test/  (sequence 1)", "ipns     http://k51"} {
			if !strings.Contains(stdout, s) {
				t.Errorf("stdout does not say %q:\n%s", s, stdout)
			}
		}
		pointsAt(t, "docs", v1, 1)
		if a, err := bc.Account(ctx, docsKey.ID.String()); err != nil || a.Payer != account.ID.String() || a.Balance != 0 {
			t.Fatalf("docs key at billing: %+v, %v; want paid for by the account", a, err)
		}
	})
	t.Run("v2", func(t *testing.T) {
		var stderr string
		v2, _, stderr = publish(t, writeSite(t, dir, "v2", "version 2"), "--name", "docs")
		if v2 == v1 || strings.Contains(stderr, "linked") || strings.Contains(stderr, "created") {
			t.Fatalf("v2 %s (v1 %s); linked or created again:\n%s", v2, v1, stderr)
		}
		pointsAt(t, "docs", v2, 2)
	})
	t.Run("rollback to v1", func(t *testing.T) {
		root, stdout, _ := publish(t, "--root", v1, "--name", "docs")
		if root != v1 || !strings.Contains(stdout, "(sequence 3)") {
			t.Fatalf("rollback printed:\n%s", stdout)
		}
		pointsAt(t, "docs", v1, 3)
	})
	var v3 string
	t.Run("--no-name uploads v3 without moving the name", func(t *testing.T) {
		var stdout string
		v3, stdout, _ = publish(t, writeSite(t, dir, "v3", "version 3"), "--name", "docs", "--no-name")
		if strings.Contains(stdout, "site ") {
			t.Fatalf("--no-name printed a site line:\n%s", stdout)
		}
		pointsAt(t, "docs", v1, 3)
	})
	t.Run("a root the name never pointed at needs --force", func(t *testing.T) {
		_, stderr, err := runTopcdn(t, "publish", "--keystore", ks, "--origin", originURL, "--root", v3, "--name", "docs")
		if err == nil || !strings.Contains(err.Error(), "never pointed at "+v3) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("rollback to a root not in the history: %v\n%s", err, stderr)
		}
		pointsAt(t, "docs", v1, 3)
		publish(t, "--root", v3, "--name", "docs", "--force")
		pointsAt(t, "docs", v3, 4)
	})
	t.Run("a second site, a second key, the same account", func(t *testing.T) {
		root, _, stderr := publish(t, writeSite(t, dir, "blog", "a blog"), "--name", "blog")
		blogKey, err := identity.Load(filepath.Join(ks, "sites", "blog.key"))
		if err != nil || !strings.Contains(stderr, "created key for blog: "+blogKey.ID.String()) {
			t.Fatalf("blog key %v, %v:\n%s", blogKey, err, stderr)
		}
		pointsAt(t, "blog", root, 1)
		links, err := bc.KeyLinks(ctx, account.ID.String())
		if err != nil || len(links) != 2 {
			t.Fatalf("the account's links: %+v, %v; want docs and blog", links, err)
		}
	})
	t.Run("a rollback needs the site's key", func(t *testing.T) {
		other := filepath.Join(dir, "empty-keys")
		_, _, err := runTopcdn(t, "publish", "--keystore", other, "--origin", originURL, "--root", v1, "--name", "docs")
		if err == nil || !strings.Contains(err.Error(), "holds no key for docs") {
			t.Fatalf("rollback from a keystore without the key: %v", err)
		}
		pointsAt(t, "docs", v3, 4)
	})
	t.Run("purge signs with the site's key from the keystore", func(t *testing.T) {
		stdout, stderr, err := runTopcdn(t, "purge", "--name", "docs", "--keystore", ks, "--origin", originURL)
		if err != nil || !strings.Contains(stdout, "purged docs") {
			t.Fatalf("purge: %v\n%s%s", err, stdout, stderr)
		}
		_, _, err = runTopcdn(t, "purge", "--name", "docs", "--keystore", filepath.Join(dir, "empty-keys"), "--origin", originURL)
		if err == nil || !strings.Contains(err.Error(), "holds no key for docs") {
			t.Fatalf("purge from a keystore without the key: %v", err)
		}
	})
	t.Run("an unfunded account is told to deposit", func(t *testing.T) {
		other := filepath.Join(dir, "other-keys")
		_, _, err := runTopcdn(t, "publish", writeSite(t, dir, "wiki", "a wiki"), "--name", "wiki", "--keystore", other, "--origin", originURL)
		acct, lerr := identity.Load(filepath.Join(other, "account.key"))
		if lerr != nil || err == nil || !strings.Contains(err.Error(), "HTTP 402") || !strings.Contains(err.Error(), "account "+acct.ID.String()) {
			t.Fatalf("publish of an unfunded keystore: %v (account %v)", err, lerr)
		}
	})
}

// TestPublishBillingUnreachable: a billing service that does not answer
// does not stop a publish; publish says the key is not linked yet.
func TestPublishBillingUnreachable(t *testing.T) {
	clearPublishEnv(t)
	dir := t.TempDir()
	o, u := testOrigin(t, origin.Config{Billing: "http://127.0.0.1:1"})
	_, stderr, err := runTopcdn(t, "publish", writeSite(t, dir, "site", "hi"), "--name", "docs", "--keystore", filepath.Join(dir, "keys"),
		"--origin", u)
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "billing at http://127.0.0.1:1 is not reachable") || !strings.Contains(stderr, "not linked") {
		t.Fatalf("stderr does not say billing was not reachable:\n%s", stderr)
	}
	if _, err := o.LookupName(context.Background(), "docs"); err != nil {
		t.Fatal(err)
	}
}
