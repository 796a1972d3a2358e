package publish

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
)

func newTestOrigin(t *testing.T) *Client {
	t.Helper()
	o, err := origin.New(context.Background(), origin.Config{DataDir: t.TempDir()})
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
	var progressed int64
	res, err := c.Push(ctx, d, func(total int64) Progress { return &countProgress{n: &progressed} })
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != res.Blocks || res.Upload.NewBlocks != res.Blocks || progressed != res.SentBytes {
		t.Fatalf("first push %+v (upload %+v), progress %d", res, res.Upload, progressed)
	}
	// Nothing changed: nothing is sent.
	res, err = c.Push(ctx, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 0 {
		t.Fatalf("re-push sent %d blocks, want 0", res.Sent)
	}

	key, _ := identity.Generate(nil)
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
	res, err := c.Push(ctx, cf, nil)
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
	if _, err := newTestOrigin(t).Push(ctx, cf2, nil); err == nil {
		t.Fatal("pushing a corrupted CAR succeeded")
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
