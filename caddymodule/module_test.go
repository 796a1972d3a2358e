package caddymodule

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// provision provisions h as Caddy does: Validate after Provision, Cleanup
// when either fails.
func provision(t *testing.T, h *Handler) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	err := h.Provision(ctx)
	if err == nil {
		err = h.Validate()
	}
	if err != nil {
		if cerr := h.Cleanup(); cerr != nil {
			t.Errorf("cleanup: %v", cerr)
		}
	}
	return err
}

// TestFailedProvisionKeepsSharedState: a reload whose handler fails to
// provision (here: a disk cache directory it may not use) after taking
// the running handler's State lets go of it once, in Cleanup, and the
// running handler keeps it.
func TestFailedProvisionKeepsSharedState(t *testing.T) {
	running := &Handler{Origin: "http://127.0.0.1:1"}
	if err := provision(t, running); err != nil {
		t.Fatal(err)
	}
	defer running.Cleanup()
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "not-a-cache"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload := &Handler{Origin: "http://127.0.0.1:1", DiskCacheDir: foreign}
	if err := provision(t, reload); err == nil {
		t.Fatal("a disk cache in a foreign directory was provisioned")
	}
	if n, ok := states.References(running.stateKey); !ok || n != 1 {
		t.Fatalf("the running handler's State has %d references (present: %v), want 1", n, ok)
	}
}

// TestProvisionRefusesInvalid: Provision opens nothing for a
// configuration Validate refuses.
func TestProvisionRefusesInvalid(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	h := &Handler{Origin: "http://127.0.0.1:1", DiskCacheDir: dir, Router: "http://127.0.0.1:2"} // no public_url
	if err := provision(t, h); err == nil {
		t.Fatal("a router without public_url was provisioned")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the disk cache was opened for a configuration Validate refuses: %v", err)
	}
}
