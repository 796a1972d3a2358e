package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
)

// testOrigin runs an origin in this process, as `topcdn publish` sees
// one: over HTTP.
func testOrigin(t *testing.T, cfg origin.Config) (*origin.Origin, string) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	o, err := origin.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(o.Handler())
	t.Cleanup(func() { srv.Close(); o.Close() })
	return o, srv.URL
}

// runPublish runs `topcdn publish args...` in this process and returns
// its error and what it wrote to standard error.
func runPublish(t *testing.T, args ...string) (string, error) {
	t.Helper()
	_, stderr, err := runTopcdn(t, append([]string{"publish"}, args...)...)
	return stderr, err
}

// runTopcdn runs `topcdn args...` in this process and returns what it
// wrote to standard output and standard error, and its error.
func runTopcdn(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// noFunds is a billing that says no publisher can pay.
type noFunds struct{}

func (noFunds) CanPay(context.Context, peer.ID) (bool, error) { return false, nil }

// TestPublishRefusesEarly: what can be told before the import (the
// arguments, the origin's answer on the key and the name, an origin that
// does not answer) fails `topcdn publish` before it imports or uploads
// anything, with a message that says what to do.
func TestPublishRefusesEarly(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, data string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	site := filepath.Dir(write("site/index.html", "<h1>blog</h1>"))
	docs := filepath.Dir(write("docs/index.html", "<h1>docs</h1>"))
	page := write("page.html", "<h1>one page</h1>")
	keyFile := func(name string) (string, *identity.Key) {
		k, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := k.Save(p); err != nil {
			t.Fatal(err)
		}
		return p, k
	}
	aliceFile, alice := keyFile("alice.key")
	bobFile, bob := keyFile("bob.key")

	tests := []struct {
		name string
		cfg  origin.Config
		// blog: alice publishes site as blog first.
		blog bool
		args func(originURL string) []string
		says []string // in the error
		who  *identity.Key
	}{
		{"a file needs --file", origin.Config{}, true,
			func(u string) []string { return []string{page, "--name", "blog", "--key", aliceFile, "--origin", u} },
			[]string{"is a file, not a directory", "--file"}, alice},
		{"--file with a directory", origin.Config{}, false,
			func(u string) []string {
				return []string{site, "--file", "--name", "blog", "--key", aliceFile, "--origin", u}
			},
			[]string{"is a directory"}, alice},
		{"a second name with the same key", origin.Config{}, true,
			func(u string) []string { return []string{docs, "--name", "docs", "--key", aliceFile, "--origin", u} },
			[]string{"HTTP 409", `already publishes name "blog"`, "another key", "topcdn keygen"}, alice},
		{"a name of another key", origin.Config{}, true,
			func(u string) []string { return []string{docs, "--name", "blog", "--key", bobFile, "--origin", u} },
			[]string{"HTTP 409", "belongs to another key"}, bob},
		{"no funds", origin.Config{Funds: noFunds{}}, false,
			func(u string) []string { return []string{site, "--name", "blog", "--key", bobFile, "--origin", u} },
			[]string{"HTTP 402", "deposit", demoBillingURL}, bob},
		{"a key the origin does not admit", origin.Config{Publishers: []peer.ID{alice.ID}}, false,
			func(u string) []string { return []string{site, "--name", "blog", "--key", bobFile, "--origin", u} },
			[]string{"HTTP 403", "may not upload"}, bob},
		{"no origin there", origin.Config{}, false,
			func(string) []string {
				return []string{site, "--name", "blog", "--key", aliceFile, "--origin", "http://127.0.0.1:1"}
			},
			[]string{"no origin answers at http://127.0.0.1:1", defaultOriginURL, demoOriginURL, "TOPCDN_ORIGIN"}, alice},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, u := testOrigin(t, tc.cfg)
			if tc.blog {
				if stderr, err := runPublish(t, site, "--name", "blog", "--key", aliceFile, "--origin", u); err != nil {
					t.Fatalf("alice publishing blog: %v\n%s", err, stderr)
				}
			}
			before, err := o.Usage(context.Background(), tc.who.ID)
			if err != nil {
				t.Fatal(err)
			}
			stderr, err := runPublish(t, tc.args(u)...)
			if err == nil {
				t.Fatalf("publish succeeded; want an error saying %q\n%s", tc.says, stderr)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if strings.Contains(stderr, "imported ") {
				t.Errorf("publish imported before it failed:\n%s", stderr)
			}
			after, err := o.Usage(context.Background(), tc.who.ID)
			if err != nil {
				t.Fatal(err)
			}
			if after.Uploads != before.Uploads || after.UsedBytes != before.UsedBytes {
				t.Errorf("usage went from %+v to %+v: publish uploaded before it failed", before, after)
			}
		})
	}
}

// TestPublishFile: with --file, one file is published as a one-file
// site, its root the file's own CID.
func TestPublishFile(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "page.html")
	if err := os.WriteFile(page, []byte("<h1>one page</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "k.key")
	if err := k.Save(keyFile); err != nil {
		t.Fatal(err)
	}
	o, u := testOrigin(t, origin.Config{})
	if stderr, err := runPublish(t, page, "--file", "--name", "page", "--key", keyFile, "--origin", u); err != nil {
		t.Fatalf("publish --file: %v\n%s", err, stderr)
	}
	ni, err := o.LookupName(context.Background(), "page")
	if err != nil {
		t.Fatal(err)
	}
	// A file under 256 KiB is one raw block.
	if !strings.HasPrefix(ni.CID, "bafkrei") {
		t.Fatalf("page -> %s, want the file's raw CID", ni.CID)
	}
}
