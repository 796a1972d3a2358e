package billingapi

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// countingReads is a ServedReadSource with nothing to claim that counts
// how often it is asked.
type countingReads struct{ asked atomic.Int32 }

func (c *countingReads) ServedReads(context.Context, int64, int) ([]storageapi.ServedRead, error) {
	c.asked.Add(1)
	return nil, nil
}

func (c *countingReads) PruneServedReads(context.Context, int64) (int64, error) { return 0, nil }

// TestRunClaimerInterval: a negative interval turns claims off; a zero one
// is DefaultClaimInterval (a first claim, then a wait).
func TestRunClaimerInterval(t *testing.T) {
	c := NewClient("http://127.0.0.1:1", nil)
	off := new(countingReads)
	RunClaimer(context.Background(), c, nil, off, -time.Second, zap.NewNop()) // returns at once
	if n := off.asked.Load(); n != 0 {
		t.Fatalf("claims off, yet the source was asked %d times", n)
	}
	on := new(countingReads)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	RunClaimer(ctx, c, nil, on, 0, zap.NewNop())
	if n := on.asked.Load(); n != 1 {
		t.Fatalf("the source was asked %d times in 100ms with the default interval, want once", n)
	}
}

var _ ServedReadSource = (*countingReads)(nil)
