package durability

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/origin/origindb"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// testConfig returns cfg with what a Keeper needs of its origin: a new
// origin database at dsn (pgtest.Dialects), a new origin key and an
// in-memory block store for both Local and Blocks.
func testConfig(t testing.TB, dsn string, cfg Config) Config {
	t.Helper()
	db, err := origindb.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	local := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	cfg.DB, cfg.Key, cfg.Local, cfg.Blocks = db, key, local, local
	return cfg
}

// newTestKeeper returns a Keeper over testConfig(dsn, cfg), and its block
// store.
func newTestKeeper(t testing.TB, dsn string, cfg Config) (*Keeper, blockstore.Blockstore) {
	t.Helper()
	cfg = testConfig(t, dsn, cfg)
	kp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kp, cfg.Local.(blockstore.Blockstore)
}

// TestNewChecksStripeConfig: settings no manifest or repair can satisfy
// are refused at start, by New and by StripeConfig.Validate alike. They
// were taken: a chunk size under 512 bytes (or a segment size over 1 GiB)
// let every stripe job upload all its shards and then fail to sign the
// manifest, forever; a repair threshold above k+m kept every segment "at
// risk", so each pass read k whole shards of every segment and placed
// nothing.
func TestNewChecksStripeConfig(t *testing.T) {
	tests := []struct {
		name    string
		sc      StripeConfig
		wantErr bool
	}{
		{"defaults", StripeConfig{}, false},
		{"threshold k+m", StripeConfig{DataShards: 4, ParityShards: 2, RepairThreshold: 6}, false},
		{"threshold above k+m", StripeConfig{DataShards: 4, ParityShards: 2, RepairThreshold: 7}, true},
		{"smallest chunk", StripeConfig{ChunkSize: 512}, false},
		{"chunk too small", StripeConfig{ChunkSize: 100}, true},
		{"chunk too large", StripeConfig{ChunkSize: 32 << 20}, true},
		{"segment too large", StripeConfig{SegmentSize: 2 << 30}, true},
		{"negative segment size", StripeConfig{SegmentSize: -1}, true},
		{"negative audit interval", StripeConfig{AuditInterval: -time.Second}, true},
		{"negative lost-after", StripeConfig{LostAfter: -time.Second}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc := tc.sc
			_, err := New(testConfig(t, filepath.Join(t.TempDir(), "origin.db"), Config{Stripe: &sc}))
			if (err != nil) != tc.wantErr {
				t.Fatalf("New err = %v, want error %v", err, tc.wantErr)
			}
			if verr := tc.sc.Validate(); (verr != nil) != tc.wantErr {
				t.Fatalf("Validate err = %v, want error %v", verr, tc.wantErr)
			}
		})
	}
}
