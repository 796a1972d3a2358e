package billing

import (
	"context"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
)

// TestConfig: zero values take the defaults; a negative SettleDelay or
// Grace means none (zero); other negative values are refused.
func TestConfig(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		shouldErr bool
		settle    time.Duration
		grace     time.Duration
	}{
		{name: "defaults", cfg: Config{}, settle: billingapi.DefaultEpoch, grace: DefaultGrace},
		{name: "set values", cfg: Config{Epoch: 10 * time.Second, SettleDelay: 3 * time.Second, Grace: time.Minute},
			settle: 3 * time.Second, grace: time.Minute},
		{name: "no delay, no grace", cfg: Config{SettleDelay: -1, Grace: -time.Second}, settle: 0, grace: 0},
		{name: "negative accept window", cfg: Config{AcceptWindow: -time.Hour}, shouldErr: true},
		{name: "negative demand factor", cfg: Config{DemandFactor: -1}, shouldErr: true},
		{name: "negative demand wait", cfg: Config{DemandWait: -time.Second}, shouldErr: true},
		{name: "negative backing wait", cfg: Config{BackingWait: -time.Second}, shouldErr: true},
		{name: "negative price", cfg: Config{PricePerGiBServed: -1}, shouldErr: true},
		{name: "epoch under a second", cfg: Config{Epoch: time.Millisecond}, shouldErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.withDefaults()
			if (err != nil) != tc.shouldErr {
				t.Fatalf("err = %v, want error: %v", err, tc.shouldErr)
			}
			if tc.shouldErr {
				return
			}
			if got.SettleDelay != tc.settle || got.Grace != tc.grace || got.AcceptWindow != DefaultAcceptWindow ||
				got.DemandFactor != DefaultDemandFactor || got.DemandWait != DefaultDemandWait || got.BackingWait < time.Hour {
				t.Errorf("settle delay %s, grace %s, accept window %s, demand factor %g, demand wait %s, backing wait %s",
					got.SettleDelay, got.Grace, got.AcceptWindow, got.DemandFactor, got.DemandWait, got.BackingWait)
			}
		})
	}
}

// noProber is a Prober that finds nothing wrong.
type noProber struct{}

func (noProber) Probe(context.Context, string, string) (int64, error) { return 0, nil }

var _ Prober = noProber{}

// TestRunProberOff: a negative interval turns the prober off; a zero one
// is the default, not a ticker that panics.
func TestRunProberOff(t *testing.T) {
	tl := newTestLedger(t, "", Config{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tl.RunProber(context.Background(), noProber{}, -time.Second)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunProber with a negative interval did not return")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	tl.RunProber(ctx, noProber{}, 0)
}
