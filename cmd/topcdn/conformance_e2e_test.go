package main

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestGatewayConformance runs scripts/conformance.sh: the
// ipfs/gateway-conformance suite against a real origin and edge. Opt-in
// (TOPCDN_CONFORMANCE=1): the first run fetches and builds the suite; later
// ones are offline and take seconds. `make conformance` runs the same.
func TestGatewayConformance(t *testing.T) {
	if os.Getenv("TOPCDN_CONFORMANCE") != "1" {
		t.Skip("set TOPCDN_CONFORMANCE=1 (or run make conformance)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../../scripts/conformance.sh")
	cmd.Env = append(os.Environ(), "TOPCDN_CONFORMANCE_PORT="+strconv.Itoa(freePort(t)))
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // its trap stops origin and edge
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("conformance: %v", err)
	}
}
