package dnsroute

import (
	"net/netip"
	"sync"
	"time"
)

// rrlAction is what response rate limiting decides for one response.
type rrlAction int

const (
	rrlAllow rrlAction = iota // send the response
	rrlDrop                   // send nothing
	rrlSlip                   // send an empty truncated response instead
)

// rrlSlipEvery is how many limited responses make one slipped (truncated)
// response: a real client behind a flooded subnet gets every second answer
// as TC and retries over TCP, which cannot be spoofed.
const rrlSlipEvery = 2

// rrlIdle is how long a subnet's bucket survives without queries.
const rrlIdle = 10 * time.Second

// rrlMaxBuckets bounds how many subnets' buckets are kept (about 100 bytes
// each): queries from spoofed sources, one subnet each, must not grow the
// table faster than sweeps empty it. A full shard forgets one bucket at
// random for each new subnet, as BIND's RRL reuses entries when its table
// is full: under such a flood limits weaken, memory stays bounded.
const rrlMaxBuckets = 1 << 18

// rrl limits UDP responses per client subnet (/24 for IPv4, /56 for IPv6)
// with a token bucket of rate responses per second and a burst of one
// second's worth, against reflection and amplification.
type rrl struct {
	rate      float64
	m         *metrics
	shards    [32]rrlShard
	lastSweep time.Time // guarded by shards[0].mu
}

type rrlShard struct {
	mu      sync.Mutex
	buckets map[netip.Addr]*rrlBucket
}

type rrlBucket struct {
	tokens  float64
	last    time.Time
	limited uint32
}

func newRRL(rate float64, m *metrics) *rrl {
	l := &rrl{rate: rate, m: m}
	for i := range l.shards {
		l.shards[i].buckets = make(map[netip.Addr]*rrlBucket)
	}
	return l
}

// subnet is the rate-limited subnet of a client address.
func subnet(a netip.Addr) netip.Addr {
	bits := 24
	if a.Is6() {
		bits = 56
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a
	}
	return p.Addr()
}

// check takes one token from a's subnet and says what to do.
func (l *rrl) check(a netip.Addr, now time.Time) rrlAction {
	key := subnet(a)
	b16 := key.As16()
	sh := &l.shards[(b16[12]^b16[13]^b16[14]^b16[7]^b16[6])%byte(len(l.shards))]
	sh.mu.Lock()
	b := sh.buckets[key]
	if b == nil {
		if len(sh.buckets) >= rrlMaxBuckets/len(l.shards) {
			for k := range sh.buckets { // map order: a random one
				delete(sh.buckets, k)
				break
			}
		}
		b = &rrlBucket{tokens: l.rate, last: now}
		sh.buckets[key] = b
	}
	b.tokens = min(l.rate, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		sh.mu.Unlock()
		return rrlAllow
	}
	b.limited++
	slip := b.limited%rrlSlipEvery == 0
	sh.mu.Unlock()
	if slip {
		l.m.rrl.WithLabelValues("slip").Inc()
		return rrlSlip
	}
	l.m.rrl.WithLabelValues("drop").Inc()
	return rrlDrop
}

// sweep forgets idle buckets, at most every rrlIdle.
func (l *rrl) sweep(now time.Time) {
	l.shards[0].mu.Lock()
	due := now.Sub(l.lastSweep) >= rrlIdle
	if due {
		l.lastSweep = now
	}
	l.shards[0].mu.Unlock()
	if !due {
		return
	}
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, b := range sh.buckets {
			if now.Sub(b.last) > rrlIdle {
				delete(sh.buckets, k)
			}
		}
		sh.mu.Unlock()
	}
}
