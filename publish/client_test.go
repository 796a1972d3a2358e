package publish

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
)

func newTestOrigin(t *testing.T) *Client {
	t.Helper()
	return newTestOriginWith(t, origin.Config{})
}

func newTestOriginWith(t *testing.T, cfg origin.Config) *Client {
	t.Helper()
	cfg.DataDir = t.TempDir()
	o, err := origin.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(o.Handler())
	t.Cleanup(func() { srv.Close(); o.Close() })
	c, err := NewClient(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPushAndName(t *testing.T) {
	ctx := context.Background()
	c := newTestOrigin(t)
	root := writeFixture(t, t.TempDir(), "site")
	d, err := ImportDir(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.Generate(nil)
	var progressed int64
	res, err := c.Push(ctx, key, d, func(total int64) Progress { return &countProgress{n: &progressed} })
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != res.Blocks || res.Upload.NewBlocks != res.Blocks || progressed != res.SentBytes {
		t.Fatalf("first push %+v (upload %+v), progress %d", res, res.Upload, progressed)
	}
	if up := res.Upload; up.Publisher != key.ID.String() || up.NewBytes != res.SentBytes || up.UsedBytes != res.SentBytes {
		t.Fatalf("first push charged %+v, want %d bytes to %s", up, res.SentBytes, key.ID)
	}
	// Nothing changed: nothing is sent, nothing more is charged.
	res, err = c.Push(ctx, key, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 0 || res.Upload.NewBytes != 0 || res.Upload.UsedBytes != progressed {
		t.Fatalf("re-push sent %d blocks, charged %+v; want nothing", res.Sent, res.Upload)
	}
	if _, err := c.Push(ctx, nil, d, nil); err == nil {
		t.Fatal("push without a key succeeded")
	}

	for want := uint64(1); want <= 2; want++ {
		ni, err := c.PublishName(ctx, "site", key, d.Root, NameOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ni.CID != d.Root.String() || ni.Sequence != want {
			t.Fatalf("publish %d: %+v", want, ni)
		}
	}
	other, _ := identity.Generate(nil)
	_, err = c.PublishName(ctx, "site", other, d.Root, NameOptions{})
	var oe *OriginError
	if !errors.As(err, &oe) || oe.Status != 409 {
		t.Fatalf("another key on a taken name: %v", err)
	}
}

func TestPushCARFile(t *testing.T) {
	ctx := context.Background()
	root := writeFixture(t, t.TempDir(), "site")
	d, err := ImportDir(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	all, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeCAR(ctx, &buf, d, all, nopProgress{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "site.car")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cf, err := OpenCAR(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	if cf.Roots()[0] != d.Root {
		t.Fatalf("CAR root %s, want %s", cf.Roots()[0], d.Root)
	}
	c := newTestOrigin(t)
	key, _ := identity.Generate(nil)
	res, err := c.Push(ctx, key, cf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != len(all) {
		t.Fatalf("sent %d of %d", res.Sent, len(all))
	}

	// A corrupted CAR is caught before anything is sent as good.
	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)-1] ^= 0xff
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	cf2, err := OpenCAR(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cf2.Close()
	if _, err := newTestOrigin(t).Push(ctx, key, cf2, nil); err == nil {
		t.Fatal("pushing a corrupted CAR succeeded")
	}
}

// TestPushOverQuota: an origin refuses a push that would take the key over
// its quota, with 413 and a message that says so; another key has its own.
func TestPushOverQuota(t *testing.T) {
	ctx := context.Background()
	d, err := ImportDir(ctx, writeFixture(t, t.TempDir(), "site"))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestOriginWith(t, origin.Config{PublisherQuota: 100})
	key, _ := identity.Generate(nil)
	_, err = c.Push(ctx, key, d, nil)
	var oe *OriginError
	if !errors.As(err, &oe) || oe.Status != 413 || !strings.Contains(oe.Message, "quota") {
		t.Fatalf("push over a 100-byte quota: %v, want 413 naming the quota", err)
	}
	if missing, err := c.Missing(ctx, []cid.Cid{d.Root}); err != nil || len(missing) != 1 {
		t.Fatalf("refused push left the root stored: missing %v, %v", missing, err)
	}
}

// noFunds is a billing that says no publisher can pay.
type noFunds struct{}

func (noFunds) CanPay(context.Context, peer.ID) (bool, error) { return false, nil }

// countingProgress counts the bytes a push reports sent.
type countingProgress struct{ n atomic.Int64 }

func (p *countingProgress) Add(n int64) { p.n.Add(n) }
func (p *countingProgress) Finish()     {}

// TestPushRefusedBeforeBody: an origin that refuses the upload on its
// header alone (here 402, the publisher has no funds) answers before any
// of the CAR is sent, so the publisher neither waits for nor is shown an
// upload that was never going to be taken.
func TestPushRefusedBeforeBody(t *testing.T) {
	ctx := context.Background()
	d, err := ImportDir(ctx, writeFixture(t, t.TempDir(), "site"))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestOriginWith(t, origin.Config{Funds: noFunds{}})
	key, _ := identity.Generate(nil)
	var p countingProgress
	var total int64
	_, err = c.Push(ctx, key, d, func(n int64) Progress { total = n; return &p })
	var oe *OriginError
	if !errors.As(err, &oe) || oe.Status != 402 {
		t.Fatalf("push without funds: %v, want 402", err)
	}
	if total == 0 {
		t.Fatal("the push had nothing to send; the test proves nothing")
	}
	if sent := p.n.Load(); sent != 0 {
		t.Fatalf("%d of %d bytes were sent before the origin's refusal", sent, total)
	}
}

func TestNewClientRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8081", "ftp://x", "http://"} {
		if _, err := NewClient(u, nil); err == nil {
			t.Errorf("NewClient(%q) succeeded", u)
		}
	}
}

func TestLineProgress(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, "upload", 4<<20)
	p.Add(1 << 20)
	p.Add(3 << 20)
	p.Finish()
	if !strings.Contains(buf.String(), "upload: 4.0 MiB / 4.0 MiB (100%)") {
		t.Fatalf("progress lines:\n%s", buf.String())
	}
}

type countProgress struct{ n *int64 }

func (c *countProgress) Add(n int64) { *c.n += n }
func (c *countProgress) Finish()     {}
