package devnet

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// secondSite is the billing test's second site, docs.
type secondSite struct {
	keystore string // its keystore: the devnet publisher as account.key, sites/docs.key
	key      string // docs' key (peer ID)
	host     string // docs.ZONE
	root     string
	from     int64 // the first epoch its account pays for it
}

// publishSecondSite makes a keystore whose account is the devnet's funded
// publisher, creates the key of docs in it (`topcdn keygen --name docs`),
// links it to the account, waits for the epoch the link starts and then
// publishes a copy of the example site as docs from the keystore: every
// byte of docs, served or stored, is then the account's to pay.
func publishSecondSite(t *testing.T, bin string, info Info, bc *billingapi.Client) secondSite {
	t.Helper()
	dir := t.TempDir()
	ks := filepath.Join(dir, "keys")
	if err := os.MkdirAll(ks, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(info.PublisherKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ks, "account.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	keyID := strings.TrimSpace(testkit.Run(t, bin, "keygen", "--name", "docs", "--keystore", ks))
	account, err := identity.Load(filepath.Join(ks, "account.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.Load(filepath.Join(ks, "sites", "docs.key"))
	if err != nil || key.ID.String() != keyID || account.ID.String() != info.PublisherID {
		t.Fatalf("keystore: docs key %v (keygen printed %s), account %v: %v", key, keyID, account, err)
	}
	li, err := bc.LinkKey(context.Background(), account, key)
	if err != nil {
		t.Fatal(err)
	}
	sleepUntil(time.Unix(li.FromEpoch, 0).Add(100 * time.Millisecond))
	// The example site's files, each with a line more: docs shares no
	// block with blog, so an edge serves it only from docs' own shards.
	// (The upstream-read check pays an edge for a publisher's striped
	// content once it read any of that publisher's shards; one that took
	// all of a site from blocks it already held, or from the origin before
	// the site was striped, is held.)
	siteDir := filepath.Join(dir, "docs")
	copyDir(t, "../examples/site", siteDir)
	err = filepath.WalkDir(siteDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteString("\n<!-- the docs site -->\n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	out := testkit.Run(t, bin, "publish", siteDir, "--name", "docs", "--keystore", ks, "--origin", info.Origin.URL,
		"--ttl", siteTTL.String())
	s := secondSite{keystore: ks, key: keyID, host: "docs." + info.DNS.Zone, from: li.FromEpoch}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "root" {
			s.root = f[1]
		}
	}
	if s.root == "" || s.root == info.Sites[0].CID {
		t.Fatalf("publish of docs printed root %q:\n%s", s.root, out)
	}

	t.Logf("docs published at %s with key %s, linked to the account %s from epoch %d: root %s",
		time.Now().Format("15:04:05"), short(s.key), short(info.PublisherID), s.from, s.root)
	return s
}

// edgeNoManifestTTL is how long an edge serves a root from the origin
// after the origin said it has no manifest for it, before it asks again
// (edge's noManifestTTL).
const edgeNoManifestTTL = 10 * time.Second

// waitStriped waits until the origin has a manifest for each of roots,
// then for edgeNoManifestTTL: an edge that asked for a root's manifest
// before it was striped (a probe through it) asks again by then. From then
// on the edges read the sites' blocks from the storage peers, with read
// orders billing's upstream-read check sees. (Traffic served before,
// blocks from the origin kept in an edge's cache, is never backed by a
// read of that edge: see billing's Limits.)
func waitStriped(t *testing.T, info Info, roots ...string) {
	t.Helper()
	start := time.Now()
	for _, r := range roots {
		testkit.WaitFor(t, 2*time.Minute, "root "+r+" striped", func() bool {
			code, _ := testkit.Get(t, info.Origin.URL+"/api/v1/manifests/"+r, "")
			return code == http.StatusOK
		})
	}
	t.Logf("the sites were striped %s after the test asked", time.Since(start).Round(time.Millisecond))
	time.Sleep(edgeNoManifestTTL)
}

// sitesJSON is what the test reads of `topcdn sites --json`.
type sitesJSON struct {
	Sites []struct {
		Name       string              `json:"name"`
		Key        string              `json:"key"`
		Account    bool                `json:"account"`
		InKeystore bool                `json:"in_keystore"`
		Published  bool                `json:"published"`
		Root       string              `json:"root"`
		Month      *billingapi.Traffic `json:"month"`
	} `json:"sites"`
	Month  *time.Time        `json:"month"`
	Errors map[string]string `json:"errors"`
}

// checkTwoSites checks that the account paid for what the edges served of
// both its keys' sites (its own, blog, and docs' linked key) and nobody
// else did, and that `topcdn sites --json` from docs' keystore shows each
// site with bytes served this month, at least what was paid for it.
func checkTwoSites(t *testing.T, bin string, info Info, led *ledger, docs secondSite, first int64) {
	paid := map[string]int64{} // bytes the account paid for, by key
	for _, e := range led.statements[info.PublisherID].Entries {
		if e.Kind != "served" || e.Amount >= 0 {
			continue
		}
		for _, k := range []string{info.PublisherID, docs.key} {
			if strings.Contains(e.Memo, " of "+k+"'s content ") {
				paid[k] += e.Bytes
			}
		}
	}
	t.Logf("the account %s paid for %d bytes served of its own key's site (blog) and %d of docs' key %s",
		short(info.PublisherID), paid[info.PublisherID], paid[docs.key], short(docs.key))
	if paid[info.PublisherID] <= 0 || paid[docs.key] <= 0 {
		t.Errorf("the account paid for %v bytes served by key, want both blog's and docs' keys", paid)
	}
	for _, a := range led.accounts {
		if a.ID == docs.key {
			t.Errorf("docs' key has an account of its own (%+v): its link should have made the account pay", a)
		}
	}

	out := testkit.Run(t, bin, "sites", "--keystore", docs.keystore, "--origin", info.Origin.URL, "--json")
	var rep sitesJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("sites --json: %v\n%s", err, out)
	}
	if rep.Errors != nil || rep.Month == nil {
		t.Fatalf("sites --json:\n%s", out)
	}
	want := map[string]struct {
		key             string
		keystore, owner bool
		root            string
	}{
		"docs": {docs.key, true, false, docs.root},
		"blog": {info.PublisherID, false, true, ""},
	}
	seen := 0
	for _, s := range rep.Sites {
		w, ok := want[s.Name]
		if !ok {
			t.Errorf("sites lists %q (%s)", s.Name, s.Key)
			continue
		}
		seen++
		if s.Key != w.key || s.InKeystore != w.keystore || s.Account != w.owner || !s.Published || (w.root != "" && s.Root != w.root) {
			t.Errorf("%s: %+v, want key %s, in keystore %v, account key %v, published", s.Name, s, short(w.key), w.keystore, w.owner)
		}
		if time.Unix(first, 0).Before(*rep.Month) {
			t.Logf("the traffic began in the previous month: this month's figures not checked")
			continue
		}
		if s.Month == nil || s.Month.Bytes < paid[w.key] || s.Month.Bytes <= 0 || s.Month.Requests <= 0 {
			t.Errorf("%s this month: %+v, want bytes served, at least the %d paid for", s.Name, s.Month, paid[w.key])
		}
	}
	if seen != 2 {
		t.Errorf("sites --json lists %d of docs and blog:\n%s", seen, out)
	}
}
