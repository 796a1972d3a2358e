package tick

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestFirstCall(t *testing.T) {
	tests := []struct {
		name      string
		run       func(context.Context, time.Duration, func(context.Context))
		wantCalls int64
	}{
		{"Every waits an interval", Every, 0},
		{"NowAndEvery calls at once", NowAndEvery, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var calls atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				tc.run(ctx, time.Hour, func(context.Context) { calls.Add(1) })
			}()
			time.Sleep(50 * time.Millisecond)
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("did not return after its context ended")
			}
			if got := calls.Load(); got != tc.wantCalls {
				t.Errorf("calls within an hour-long interval = %d, want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestRepeatsUntilDone(t *testing.T) {
	tests := []struct {
		name string
		run  func(context.Context, time.Duration, func(context.Context))
	}{
		{"Every", Every},
		{"NowAndEvery", NowAndEvery},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var calls atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				tc.run(ctx, time.Millisecond, func(fctx context.Context) {
					if fctx != ctx {
						t.Error("fn got another context than the loop's")
					}
					if calls.Add(1) == 5 {
						cancel()
					}
				})
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("still running after %d calls", calls.Load())
			}
			if got := calls.Load(); got != 5 {
				t.Errorf("calls = %d, want 5: no call after the context ended", got)
			}
		})
	}
}

func TestDoneBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	NowAndEvery(ctx, time.Millisecond, func(context.Context) { t.Error("fn called with its context already done") })
	Every(ctx, time.Millisecond, func(context.Context) { t.Error("fn called with its context already done") })
}
