package tick

import (
	"context"
	"time"
)

// Every calls fn every interval until ctx ends, the first time one
// interval after it is called. A call that overruns the interval delays
// the next one and drops the ticks it missed, as time.Ticker does. Every
// returns once ctx is done and fn has returned; it panics if interval is
// not positive, as time.NewTicker does.
func Every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	run(ctx, interval, false, fn)
}

// NowAndEvery is Every with a first call at once: fn runs now, then every
// interval from now until ctx ends.
func NowAndEvery(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	run(ctx, interval, true, fn)
}

func run(ctx context.Context, interval time.Duration, now bool, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	if now && ctx.Err() == nil {
		fn(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return // both were ready: the end wins
		}
		fn(ctx)
	}
}
