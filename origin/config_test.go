package origin

import (
	"cmp"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/topcdn/topcdn/origin/durability"
)

// TestNewRefusesBadStripeConfig: a StripeConfig the storage side would
// refuse is refused before anything is created in the data directory.
func TestNewRefusesBadStripeConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, err := New(context.Background(), Config{DataDir: dir, Stripe: &durability.StripeConfig{ChunkSize: 100}})
	if err == nil {
		t.Fatal("chunk size under erasure's minimum accepted")
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("data directory created for a refused config (stat: %v)", serr)
	}
}

// TestConfig: zero values take the defaults, a negative PublisherQuota
// turns the quota off, and other negative values are refused.
func TestConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		cfg       Config
		shouldErr bool
		quota     int64
	}{
		{name: "defaults", cfg: Config{DataDir: dir, Stripe: &durability.StripeConfig{}}, quota: DefaultPublisherQuota},
		{name: "set values", cfg: Config{DataDir: dir, PublisherQuota: 5, DB: "postgres://db.example/origin"}, quota: 5},
		{name: "no quota", cfg: Config{DataDir: dir, PublisherQuota: -1}, quota: 0},
		{name: "no data dir", cfg: Config{}, shouldErr: true},
		{name: "negative upload size", cfg: Config{DataDir: dir, MaxUploadSize: -1}, shouldErr: true},
		{name: "negative heartbeat interval", cfg: Config{DataDir: dir, HeartbeatInterval: -time.Second}, shouldErr: true},
		{name: "negative audit interval", cfg: Config{DataDir: dir, Stripe: &durability.StripeConfig{AuditInterval: -1}}, shouldErr: true},
		{name: "negative repair threshold", cfg: Config{DataDir: dir, Stripe: &durability.StripeConfig{RepairThreshold: -1}}, shouldErr: true},
		{name: "negative retention", cfg: Config{DataDir: dir, NameChangesRetention: -time.Hour}, shouldErr: true},
		{name: "negative waiters", cfg: Config{DataDir: dir, MaxNameWaiters: -1}, shouldErr: true},
		{name: "negative waiters per IP", cfg: Config{DataDir: dir, MaxNameWaitersPerIP: -1}, shouldErr: true},
		{name: "negative lost-after", cfg: Config{DataDir: dir, Stripe: &durability.StripeConfig{LostAfter: -time.Second}}, shouldErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.setDefaults()
			if (err != nil) != tc.shouldErr {
				t.Fatalf("err = %v, want error: %v", err, tc.shouldErr)
			}
			if tc.shouldErr {
				return
			}
			if cfg.PublisherQuota != tc.quota || cfg.MaxUploadSize != DefaultMaxUploadSize ||
				cfg.MaxConcurrentUploads != DefaultMaxConcurrentUploads || cfg.NameChangesRetention != DefaultNameChangesRetention ||
				cfg.MaxNameWaiters != DefaultMaxNameWaiters || cfg.MaxNameWaitersPerIP != DefaultMaxNameWaitersPerIP {
				t.Errorf("quota %d, max upload %d, concurrent uploads %d, retention %s, waiters %d (%d per IP)", cfg.PublisherQuota,
					cfg.MaxUploadSize, cfg.MaxConcurrentUploads, cfg.NameChangesRetention, cfg.MaxNameWaiters, cfg.MaxNameWaitersPerIP)
			}
			if want := cmp.Or(tc.cfg.DB, filepath.Join(dir, "origin.db")); cfg.DB != want {
				t.Errorf("DB %q, want %q", cfg.DB, want)
			}
		})
	}
}
