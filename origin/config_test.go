package origin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

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
