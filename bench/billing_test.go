package main

import (
	"context"
	"testing"

	"github.com/topcdn/topcdn/identity"
)

// TestBillingSmall runs the billing benchmark on a few receipts: both
// formats must have every receipt accepted.
func TestBillingSmall(t *testing.T) {
	t.Setenv("TOPCDN_BENCH_CACHE", t.TempDir())
	if err := runBilling(context.Background(), []string{"-records", "300", "-batch", "100", "-runs", "1"}); err != nil {
		t.Fatal(err)
	}
	if err := runBilling(context.Background(), []string{"-records", "300", "-batch", "7"}); err == nil {
		t.Fatal("-records not a multiple of -batch accepted")
	}
}

func TestSignReceipts(t *testing.T) {
	k, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	batches, singles, err := signReceipts(k, 600, 60, 50, 10)
	if err != nil || len(batches) != 5 || len(singles) != 50 {
		t.Fatalf("%d batches, %d singles, %v", len(batches), len(singles), err)
	}
}
