package storage

import (
	"math/rand/v2"
	"time"
)

// backoff spaces the retries of a request to the origin: the delay before
// retry n (from 0) is min·2ⁿ, capped at max, then drawn at random between
// half of it and all of it (jitter), so that peers started together by
// one outage do not all knock at once when the origin comes back.
type backoff struct {
	min, max time.Duration
}

// defaultOriginBackoff is how New retries an origin it cannot reach at
// start: from 0.5 s up to 30 s between tries.
var defaultOriginBackoff = backoff{min: 500 * time.Millisecond, max: 30 * time.Second}

// delay returns the wait before retry n, with rnd (in [0,1)) drawing the
// jitter.
func (b backoff) delay(n int, rnd func() float64) time.Duration {
	d := b.min
	for range n {
		if d >= b.max/2 {
			d = b.max
			break
		}
		d *= 2
	}
	d = min(d, b.max)
	return d/2 + time.Duration(rnd()*float64(d-d/2))
}

// jitter is the random source of backoff delays.
func jitter() float64 { return rand.Float64() }
