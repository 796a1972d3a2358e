package publish

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
)

// TestCheck: the origin's pre-check refuses, with the status and message
// the upload or the claim would get, what it can tell before anything is
// imported: a second name for a key, a name of another key, a key not
// allowed, no funds. Alice has published "blog" first.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	d, err := ImportDir(ctx, writeFixture(t, t.TempDir(), "site"))
	if err != nil {
		t.Fatal(err)
	}
	all, err := d.Blocks()
	if err != nil {
		t.Fatal(err)
	}
	var siteBytes int64
	for _, c := range all {
		siteBytes += int64(d.Size(c))
	}
	alice, _ := identity.Generate(nil)
	bob, _ := identity.Generate(nil)
	tests := []struct {
		name   string
		cfg    origin.Config
		key    *identity.Key
		human  string
		status int    // 0: allowed
		says   string // in the refusal
	}{
		{"own name", origin.Config{}, alice, "blog", 0, ""},
		{"free name, new key", origin.Config{}, bob, "docs", 0, ""},
		{"no name", origin.Config{}, alice, "", 0, ""},
		{"second name of a key", origin.Config{}, alice, "docs", http.StatusConflict, `already publishes name "blog"`},
		{"name of another key", origin.Config{}, bob, "blog", http.StatusConflict, "belongs to another key"},
		{"bad name", origin.Config{}, bob, "Not_A_Label", http.StatusBadRequest, ""},
		{"key not allowed", origin.Config{Publishers: []peer.ID{alice.ID}}, bob, "docs", http.StatusForbidden, "may not upload"},
		{"no funds", origin.Config{Funds: noFunds{}}, bob, "docs", http.StatusPaymentRequired, "no funds"},
		// A full quota is no refusal: a publish that adds no new bytes
		// is taken. The usage shows it.
		{"quota used up", origin.Config{PublisherQuota: siteBytes}, alice, "blog", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestOriginWith(t, tc.cfg)
			// Alice publishes blog first (where billing lets her: no
			// row with funds needs it).
			if tc.cfg.Funds == nil {
				if _, err := c.Push(ctx, alice, d, nil); err != nil {
					t.Fatal(err)
				}
				if _, err := c.PublishName(ctx, "blog", alice, d.Root, NameOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			u, err := c.Check(ctx, tc.key.ID, tc.human)
			if tc.status == 0 {
				if err != nil || u == nil || u.Publisher != tc.key.ID.String() {
					t.Fatalf("Check = %+v, %v; want the usage of %s", u, err, tc.key.ID)
				}
				if q := tc.cfg.PublisherQuota; q > 0 && (u.QuotaBytes != q || u.UsedBytes != q) {
					t.Fatalf("Check = %+v; want all %d bytes of the quota used", u, q)
				}
				return
			}
			var oe *OriginError
			if !errors.As(err, &oe) || oe.Status != tc.status || !strings.Contains(oe.Message, tc.says) {
				t.Fatalf("Check = %+v, %v; want HTTP %d saying %q", u, err, tc.status, tc.says)
			}
		})
	}
}

// TestCheckOldOrigin: an origin without the pre-check endpoint is told
// apart from a refusal.
func TestCheckOldOrigin(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c, err := NewClient(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.Generate(nil)
	if _, err := c.Check(context.Background(), key.ID, "blog"); !errors.Is(err, ErrNoCheck) {
		t.Fatalf("Check against an origin without it: %v, want ErrNoCheck", err)
	}
}
