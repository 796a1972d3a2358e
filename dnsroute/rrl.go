package dnsroute

import (
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
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

// rrlIdle is how long a bucket survives without responses.
const rrlIdle = 10 * time.Second

// rrlMaxBuckets bounds how many (subnet, response) buckets are kept (about
// 100 bytes each): queries from spoofed sources, or for many names, must
// not grow the table faster than sweeps empty it. A full shard forgets one
// bucket at random for each new one, as BIND's RRL reuses entries when its
// table is full: under such a flood limits weaken, memory stays bounded.
const rrlMaxBuckets = 1 << 18

// rrl limits UDP responses as BIND's response rate limiting does: per
// client subnet (/24 for IPv4, /56 for IPv6) AND per response (see
// rrlKey), with a token bucket of rate responses per second and a burst of
// one second's worth. A reflection attack needs the same (or a few) large
// responses sent to its victim again and again, and is limited; a resolver
// asking for many different names is not.
type rrl struct {
	rate      float64
	m         *metrics
	seed      maphash.Seed
	shards    [32]rrlShard
	lastSweep time.Time // guarded by shards[0].mu
}

type rrlShard struct {
	mu      sync.Mutex
	buckets map[rrlBucketKey]*rrlBucket
}

// rrlBucketKey is what one bucket limits: responses of one kind (rrlKey)
// to one client subnet.
type rrlBucketKey struct {
	subnet netip.Addr
	resp   uint64
}

type rrlBucket struct {
	tokens  float64
	last    time.Time
	limited uint32
}

func newRRL(rate float64, m *metrics) *rrl {
	l := &rrl{rate: rate, m: m, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = make(map[rrlBucketKey]*rrlBucket)
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

// Response kinds of rrlKey.
const (
	rrlKindAnswer   byte = 1 + iota // NOERROR with records: per name and type
	rrlKindNodata                   // NOERROR without records: per name, any type
	rrlKindNXDomain                 // NXDOMAIN: per zone
	rrlKindError                    // any other rcode: per zone
)

// rrlKey names the response m for rate limiting, as BIND's RRL groups
// responses: answers by owner name and type; empty answers (NODATA) by
// name, whatever the type; NXDOMAIN by zone, so random names count as one;
// errors (REFUSED, FORMERR, SERVFAIL, …) by zone too. Names the router
// synthesises from a label, CID.ipfs.ZONE and KEY.ipns.ZONE, count as the
// wildcard they are (*.ipfs.ZONE, *.ipns.ZONE, as BIND counts wildcard
// answers by the wildcard): minting names must not mint buckets.
func (l *rrl) key(m *dns.Msg, zone string) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	var kind byte
	switch {
	case m.Rcode == dns.RcodeNameError:
		kind = rrlKindNXDomain
	case m.Rcode != dns.RcodeSuccess || len(m.Question) != 1:
		kind = rrlKindError
	case len(m.Answer) == 0:
		kind = rrlKindNodata
	default:
		kind = rrlKindAnswer
	}
	h.WriteByte(kind)
	if kind == rrlKindNXDomain || kind == rrlKindError {
		h.WriteString(zone)
		return h.Sum64()
	}
	q := m.Question[0]
	if kind == rrlKindAnswer {
		h.WriteByte(byte(q.Qtype >> 8))
		h.WriteByte(byte(q.Qtype))
	}
	h.WriteString(rrlName(strings.ToLower(q.Name), zone))
	return h.Sum64()
}

// rrlName is the name a response to name counts under: name itself, or
// the wildcard of a synthesised CID.ipfs.ZONE or KEY.ipns.ZONE.
func rrlName(name, zone string) string {
	rel, ok := strings.CutSuffix(name, "."+zone)
	if !ok {
		return name
	}
	if _, kind, ok := strings.Cut(rel, "."); ok && (kind == "ipfs" || kind == "ipns") {
		return "*." + kind + "." + zone
	}
	return name
}

// check takes one token from the bucket of responses resp (an rrl.key) to
// a's subnet and says what to do.
func (l *rrl) check(a netip.Addr, resp uint64, now time.Time) rrlAction {
	key := rrlBucketKey{subnet(a), resp}
	b16 := key.subnet.As16()
	sh := &l.shards[(uint64(b16[12]^b16[13]^b16[14]^b16[7]^b16[6])^resp)%uint64(len(l.shards))]
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
