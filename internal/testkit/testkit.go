// Package testkit holds what topcdn's tests share: keys from seeds, the
// topcdn binary built once per test binary, child processes that stop
// with the test that started them, polling, and small HTTP GETs. Import it
// only from _test.go files.
package testkit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
)

// Key returns the ed25519 key whose seed is 32 bytes of seed: the same
// key for the same seed in every run, so signed fixtures stay valid.
func Key(t testing.TB, seed byte) *identity.Key {
	t.Helper()
	sk, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	k, err := identity.FromPrivate(sk)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// WaitFor polls cond until it holds, and fails t if timeout passes first;
// what says what is waited for. It polls every 10 ms for the first
// second, so a condition that soon holds is seen at once, then every
// 200 ms, so a slow one (one that runs a command, say) does not run
// needlessly often.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		if time.Since(start) < time.Second {
			time.Sleep(10 * time.Millisecond)
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// Get fetches url, with the Accept header set to accept unless that is
// empty, and returns the status code and the body.
func Get(t testing.TB, url, accept string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}

// GetJSON fetches url and decodes its JSON body into v; anything but a
// 2xx answer with JSON fails t.
func GetJSON(t testing.TB, url string, v any) {
	t.Helper()
	if err := httpkit.GetJSON(context.Background(), nil, url, 64<<20, v); err != nil {
		t.Fatal(err)
	}
}

// Run runs bin with args and returns its standard output; a failure fails
// t with the command's standard error.
func Run(t testing.TB, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// IPNSRecord returns a marshalled IPNS record of key pointing at root,
// with sequence seq, valid until eol, a one-minute TTL and opts.
func IPNSRecord(t testing.TB, key *identity.Key, root cid.Cid, seq uint64, eol time.Time, opts ...ipns.Option) []byte {
	t.Helper()
	rec, err := ipns.NewRecord(key.Private, path.FromCid(root), seq, eol, time.Minute, opts...)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ipns.MarshalRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
