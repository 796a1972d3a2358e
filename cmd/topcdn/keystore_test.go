package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
)

// clearPublishEnv unsets what publish's flags default from, so that the
// test's flags alone decide.
func clearPublishEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"TOPCDN_KEY", "TOPCDN_KEYSTORE", "TOPCDN_BILLING", "TOPCDN_ORIGIN", "XDG_CONFIG_HOME"} {
		t.Setenv(v, "")
	}
	t.Setenv("HOME", t.TempDir()) // never the tester's own keystore
}

// writeSite writes a one-page site saying text under dir/name.
func writeSite(t *testing.T, dir, name, text string) string {
	t.Helper()
	site := filepath.Join(dir, name)
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return site
}

// TestPublishFlagRules: the combinations of --root, --no-name, --force,
// --name, a directory and --car that publish refuses before it reads or
// asks anything.
func TestPublishFlagRules(t *testing.T) {
	const root = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
	tests := []struct {
		name string
		p    publishFlags
		args []string
		says string // "" for no error
	}{
		{"a directory and a name", publishFlags{name: "blog"}, []string{"site"}, ""},
		{"--no-name needs no name", publishFlags{noName: true}, []string{"site"}, ""},
		{"--no-name with a name", publishFlags{noName: true, name: "blog"}, []string{"site"}, ""},
		{"--no-name with an invalid name", publishFlags{noName: true, name: "Blog!"}, []string{"site"}, "not a valid name"},
		{"no name", publishFlags{}, []string{"site"}, "--name is required (or use --no-name or --only-hash)"},
		{"neither directory nor --car", publishFlags{name: "blog"}, nil, "give either a directory or --car FILE (or --root CID"},
		{"--root", publishFlags{name: "blog", root: root}, nil, ""},
		{"--root --force", publishFlags{name: "blog", root: root, force: true}, nil, ""},
		{"--root with a directory", publishFlags{name: "blog", root: root}, []string{"site"}, "give no directory and no --car"},
		{"--root with --car", publishFlags{name: "blog", root: root, carFile: "x.car"}, nil, "give no directory and no --car"},
		{"--root without --name", publishFlags{root: root}, nil, "--root needs --name"},
		{"--root with --no-name", publishFlags{name: "blog", root: root, noName: true}, nil, "--no-name does not"},
		{"--root with --only-hash", publishFlags{name: "blog", root: root, onlyHash: true}, nil, "publishes nothing new"},
		{"--root not a CID", publishFlags{name: "blog", root: "v1"}, nil, `--root "v1"`},
		{"--force without --root", publishFlags{name: "blog", force: true}, []string{"site"}, "--force applies to --root only"},
		{"--only-hash needs no name", publishFlags{onlyHash: true}, []string{"site"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.validate(tc.args)
			switch {
			case tc.says == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)):
				t.Fatalf("error %v, want one saying %q", err, tc.says)
			}
		})
	}
}

// TestPublishKeystore: without --key, publish signs with NAME's key in
// the keystore, where --keystore, $TOPCDN_KEYSTORE, $XDG_CONFIG_HOME or
// the home directory put it (in that order), creating it and the account
// key (0600, in 0700 directories); --key wins over all of them;
// --no-name uploads without moving the name, signed by the site's key or
// else the account's. Each row checks the URLs printed.
func TestPublishKeystore(t *testing.T) {
	clearPublishEnv(t)
	dir := t.TempDir()
	site := writeSite(t, dir, "site", "<h1>hello</h1>")
	keyFile := filepath.Join(dir, "own.key")
	own, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := own.Save(keyFile); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		args func(ks string) []string
		// keystore is where the keys must be (relative to the row's
		// temporary directory), "" for none created.
		keystore string
		moved    bool // the name points at the upload
		says     []string
	}{
		{"--keystore", nil, func(ks string) []string { return []string{"--keystore", filepath.Join(ks, "flag")} }, "flag", true,
			[]string{"preview  http://", ".ipfs.cdn.test/", "site     http://NAME.cdn.test/  (sequence 1)", "ipns     http://k51", ".ipns.cdn.test/"}},
		{"$TOPCDN_KEYSTORE", map[string]string{"TOPCDN_KEYSTORE": "env"}, func(string) []string { return nil }, "env", true, nil},
		{"--keystore over $TOPCDN_KEYSTORE", map[string]string{"TOPCDN_KEYSTORE": "env"},
			func(ks string) []string { return []string{"--keystore", filepath.Join(ks, "flag")} }, "flag", true, nil},
		{"$XDG_CONFIG_HOME", map[string]string{"XDG_CONFIG_HOME": "xdg"}, func(string) []string { return nil }, "xdg/topcdn/keys", true, nil},
		{"the home directory", map[string]string{"HOME": "home"}, func(string) []string { return nil }, "home/.config/topcdn/keys", true, nil},
		{"--key wins", map[string]string{"TOPCDN_KEYSTORE": "env"}, func(string) []string { return []string{"--key", keyFile} }, "", true, nil},
		{"--no-name", nil, func(ks string) []string { return []string{"--keystore", filepath.Join(ks, "nn"), "--no-name"} }, "nn", false,
			[]string{"preview  http://"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			for k, v := range tc.env {
				t.Setenv(k, filepath.Join(base, v))
			}
			o, u := testOrigin(t, origin.Config{})
			name := fmt.Sprintf("site%d", i)
			args := append([]string{"publish", site, "--name", name, "--origin", u}, tc.args(base)...)
			stdout, stderr, err := runTopcdn(t, args...)
			if err != nil {
				t.Fatalf("publish: %v\n%s", err, stderr)
			}
			for _, s := range tc.says {
				if s = strings.ReplaceAll(s, "NAME", name); !strings.Contains(stdout, s) {
					t.Errorf("output does not say %q:\n%s", s, stdout)
				}
			}
			_, err = o.LookupName(context.Background(), name)
			if moved := err == nil; moved != tc.moved {
				t.Fatalf("name moved: %v (%v), want %v", moved, err, tc.moved)
			}
			if tc.keystore == "" {
				if strings.Contains(stderr, "created") {
					t.Fatalf("a key was created with --key:\n%s", stderr)
				}
				return
			}
			ks := filepath.Join(base, tc.keystore)
			siteKey, err := identity.Load(filepath.Join(ks, "sites", name+".key"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, "created key for "+name+": "+siteKey.ID.String()) || !strings.Contains(stderr, "created account key: ") {
				t.Errorf("stderr does not tell the keys created:\n%s", stderr)
			}
			for _, d := range []string{ks, filepath.Join(ks, "sites")} {
				if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
					t.Errorf("%s: %v, %v; want a 0700 directory", d, st.Mode(), err)
				}
			}
			// The upload was signed by the site's key: its usage shows it.
			if u, err := o.Usage(context.Background(), siteKey.ID); err != nil || u.Uploads != 1 {
				t.Fatalf("usage of the site key: %+v, %v", u, err)
			}
			again, stderr2, err := runTopcdn(t, args...)
			if err != nil || strings.Contains(stderr2, "created") {
				t.Fatalf("second publish: %v; created a key again:\n%s", err, stderr2)
			}
			if tc.moved && !strings.Contains(again, "(sequence 2)") {
				t.Fatalf("second publish printed:\n%s", again)
			}
		})
	}
}

// TestPublishNoNameAccount: --no-name without --name uploads with the
// keystore's account key and prints the root and preview only.
func TestPublishNoNameAccount(t *testing.T) {
	clearPublishEnv(t)
	dir := t.TempDir()
	site := writeSite(t, dir, "site", "<h1>preview me</h1>")
	o, u := testOrigin(t, origin.Config{Domain: "example.net"})
	ks := filepath.Join(dir, "keys")
	stdout, stderr, err := runTopcdn(t, "publish", site, "--no-name", "--keystore", ks, "--origin", u)
	if err != nil {
		t.Fatalf("publish --no-name: %v\n%s", err, stderr)
	}
	account, err := identity.Load(filepath.Join(ks, "account.key"))
	if err != nil {
		t.Fatal(err)
	}
	if u, err := o.Usage(context.Background(), account.ID); err != nil || u.Uploads != 1 {
		t.Fatalf("usage of the account key: %+v, %v", u, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "root     bafy") || !strings.HasSuffix(lines[1], ".ipfs.example.net/") {
		t.Fatalf("printed %q, want the root and the preview URL under the origin's domain", lines)
	}
	if _, err := os.Stat(filepath.Join(ks, "sites")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a site key was made without --name: %v", err)
	}
}

// TestKeygenName: keygen --name creates the site's key in the keystore
// (and the account key), refuses to make it twice, and needs --out or
// --name.
func TestKeygenName(t *testing.T) {
	clearPublishEnv(t)
	ks := filepath.Join(t.TempDir(), "keys")
	stdout, stderr, err := runTopcdn(t, "keygen", "--name", "docs", "--keystore", ks)
	if err != nil {
		t.Fatal(err)
	}
	k, err := identity.Load(filepath.Join(ks, "sites", "docs.key"))
	if err != nil || strings.TrimSpace(stdout) != k.ID.String() {
		t.Fatalf("keygen printed %q; key %v, %v", stdout, k, err)
	}
	if !strings.Contains(stderr, "created account key: ") {
		t.Fatalf("stderr: %s", stderr)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"keygen", "--name", "docs", "--keystore", ks}, "has a key already"},
		{[]string{"keygen", "--name", "Docs!", "--keystore", ks}, "not a valid name"},
		{[]string{"keygen"}, "give --out FILE or --name NAME"},
	} {
		if _, _, err := runTopcdn(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.says)
		}
	}
}
