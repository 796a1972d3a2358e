package dnsroute

// Ranking constants, in kilometres of "effective distance".
const (
	// unlocatedKm is the distance of an edge whose location is unknown from
	// a located client: farther than any located edge can be.
	unlocatedKm = 20100
	// loadKm is what a fully loaded edge adds on top of scaling its
	// distance by 1+load/capacity, so that between two edges in the same
	// city the less loaded wins.
	loadKm = 500
	// fullKm pushes edges at or past their capacity behind every edge with
	// room left.
	fullKm = 1e6
)

// score is an edge's effective distance from a client: its great-circle
// distance d scaled by 1+u, where u = load/capacity, plus u·loadKm, plus
// fullKm when u ≥ 1. Without a client location d is 0, so edges rank by
// load alone.
func score(e *edgeView, loc Location, located bool) float64 {
	d := 0.0
	if located {
		d = unlocatedKm
		if e.located {
			d = distanceKm(loc.Lat, loc.Lon, e.loc.Lat, e.loc.Lon)
		}
	}
	s := d*(1+e.util) + loadKm*e.util
	if e.util >= 1 {
		s += fullKm
	}
	return s
}

// mix spreads the bits of a 64-bit key (splitmix64's finalizer).
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// rank returns up to n edges with an address of the family asked (IPv6
// when v6), best first: lowest score, ties broken by a hash of the edge
// and the client's subnet, so that clients spread over equally good edges
// while each client keeps getting the same order.
func rank(edges []*edgeView, loc Location, located bool, tie uint64, v6 bool, n int) []*edgeView {
	type cand struct {
		e     *edgeView
		s     float64
		order uint64
	}
	best := make([]cand, 0, n)
	for _, e := range edges {
		if v6 && !e.v6.IsValid() || !v6 && !e.v4.IsValid() {
			continue
		}
		c := cand{e: e, s: score(e, loc, located), order: mix(e.hash ^ tie)}
		// Insert c into best, kept sorted and at most n long.
		i := len(best)
		for i > 0 && (c.s < best[i-1].s || c.s == best[i-1].s && c.order < best[i-1].order) {
			i--
		}
		if i >= n {
			continue
		}
		if len(best) < n {
			best = append(best, cand{})
		}
		copy(best[i+1:], best[i:len(best)-1])
		best[i] = c
	}
	out := make([]*edgeView, len(best))
	for i, c := range best {
		out[i] = c.e
	}
	return out
}
