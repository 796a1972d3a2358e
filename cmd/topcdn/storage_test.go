package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/storage"
)

// TestStorageCapacityFlag: `topcdn storage --capacity` larger than the
// data directory's filesystem can hold is refused before the peer serves,
// with the flag, the capacity asked and the free space in the message.
func TestStorageCapacityFlag(t *testing.T) {
	origin := testkit.Key(t, 1)
	cmd := newStorageCmd()
	cmd.SetArgs([]string{"--data", filepath.Join(t.TempDir(), "peer"), "--origin", "http://127.0.0.1:1",
		"--origin-id", origin.ID.String(), "--listen", "127.0.0.1:0", "--capacity", "1EiB", "--log-level", "error"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	if !errors.Is(err, storage.ErrCapacityTooLarge) {
		t.Fatalf("topcdn storage --capacity 1EiB: %v, want ErrCapacityTooLarge", err)
	}
	for _, want := range []string{"--capacity", "1.0 EiB (1152921504606846976 bytes)", "free plus"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
