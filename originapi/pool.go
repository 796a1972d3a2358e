package originapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/httpkit"
	"go.uber.org/zap"
)

// Pool backoff bounds: an origin that fails is left alone for
// DefaultPoolMinBackoff, doubling at each failure in a row up to
// DefaultPoolMaxBackoff.
const (
	DefaultPoolMinBackoff = time.Second
	DefaultPoolMaxBackoff = 30 * time.Second
)

// Pool is the origins a client talks to, in the order configured, with
// failover: Do runs a request against the first origin not marked down,
// and when that origin cannot answer (a transport error, a timeout, or
// HTTP 502, 503 or 504) marks it down and runs the request again on the
// next. A down origin is tried again after a backoff (1 s doubling to
// 30 s) or when no other is up. Each switch is logged once (Warn "origin
// failover") and counted, and an origin answering again is logged (Info
// "origin back").
//
// A Pool is safe for concurrent use. Every origin of a network serves the
// same API over one database, so any of them answers any request.
type Pool struct {
	urls    []string
	log     *zap.Logger
	metrics *poolMetrics
	now     func() time.Time
	min     time.Duration
	max     time.Duration

	mu      sync.Mutex
	state   []originState // by index in urls
	current int           // the origin the last request succeeded on
}

type originState struct {
	fails     int       // in a row
	downUntil time.Time // zero: up
}

// PoolOption configures a Pool.
type PoolOption func(*Pool)

// WithPoolLogger logs failovers and recoveries to log.
func WithPoolLogger(log *zap.Logger) PoolOption {
	return func(p *Pool) {
		if log != nil {
			p.log = log
		}
	}
}

// WithPoolMetrics registers the pool's metrics with reg, named
// topcdn_<component>_origin_requests_total{origin,outcome},
// topcdn_<component>_origin_failovers_total{from,to} and
// topcdn_<component>_origin_up{origin}. Pools of one component in one
// process share them.
func WithPoolMetrics(reg prometheus.Registerer, component string) PoolOption {
	return func(p *Pool) {
		if reg != nil {
			p.metrics = newPoolMetrics(reg, component)
		}
	}
}

// WithPoolBackoff sets how long a failed origin is left alone: min after
// its first failure in a row, doubling up to max. Zero means the default.
func WithPoolBackoff(min, max time.Duration) PoolOption {
	return func(p *Pool) {
		if min > 0 {
			p.min = min
		}
		if max > 0 {
			p.max = max
		}
	}
}

// NewPool returns a pool over the origins at urls (base URLs such as
// http://127.0.0.1:7070, tried in this order). It refuses an empty list,
// a URL that is not http(s)://host[:port][/path], and duplicates.
func NewPool(urls []string, opts ...PoolOption) (*Pool, error) {
	if len(urls) == 0 {
		return nil, errors.New("originapi: no origin URL")
	}
	p := &Pool{log: zap.NewNop(), now: time.Now, min: DefaultPoolMinBackoff, max: DefaultPoolMaxBackoff}
	seen := map[string]bool{}
	for _, raw := range urls {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("originapi: origin URL %q: want http(s)://host[:port]", raw)
		}
		base := strings.TrimRight(u.String(), "/")
		if seen[base] {
			return nil, fmt.Errorf("originapi: origin URL %q given twice", raw)
		}
		seen[base] = true
		p.urls = append(p.urls, base)
	}
	p.state = make([]originState, len(p.urls))
	for _, o := range opts {
		o(p)
	}
	if p.metrics != nil {
		for _, u := range p.urls {
			p.metrics.up.WithLabelValues(u).Set(1)
		}
	}
	return p, nil
}

// SplitURLs splits each of values at commas and returns the non-empty
// parts: what a repeatable --origin flag or an ORIGIN env variable holds.
func SplitURLs(values ...string) []string {
	var urls []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				urls = append(urls, part)
			}
		}
	}
	return urls
}

// URLs returns the pool's origins, in the order configured.
func (p *Pool) URLs() []string { return append([]string(nil), p.urls...) }

// First returns the first origin configured.
func (p *Pool) First() string { return p.urls[0] }

// Current returns the origin the next request goes to first.
func (p *Pool) Current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.urls[p.orderLocked()[0]]
}

// Do calls fn with the base URL of an origin and returns its error; when
// the error says the origin cannot answer (see Unavailable) and another
// origin is left to try, it marks that origin down and calls fn again with
// the next. fn must do the whole exchange (reading the body included), so
// a request cut off half-way is run again elsewhere. Do stops when ctx is
// done.
func (p *Pool) Do(ctx context.Context, fn func(ctx context.Context, base string) error) error {
	p.mu.Lock()
	order := p.orderLocked()
	p.mu.Unlock()
	var err error
	for n, i := range order {
		base := p.urls[i]
		err = fn(ctx, base)
		if err == nil || ctx.Err() != nil || !Unavailable(err) {
			p.done(i, err, false)
			return err
		}
		p.done(i, err, true)
		if n+1 < len(order) {
			next := p.urls[order[n+1]]
			p.log.Warn("origin failover", zap.String("from", base), zap.String("to", next), zap.Error(err))
			if p.metrics != nil {
				p.metrics.failovers.WithLabelValues(base, next).Inc()
			}
		}
	}
	return err
}

// orderLocked returns the indexes of the origins to try, in order: those
// up (the last one that answered first, then configured order), then
// those down, soonest back first.
func (p *Pool) orderLocked() []int {
	now := p.now()
	var up, down []int
	for i := range p.urls {
		if i == p.current {
			continue
		}
		if p.state[i].downUntil.Before(now) {
			up = append(up, i)
		} else {
			down = append(down, i)
		}
	}
	if p.state[p.current].downUntil.Before(now) {
		up = append([]int{p.current}, up...)
	} else {
		down = append(down, p.current)
	}
	// Down origins, soonest back first: tried only when every up one failed.
	slices.SortStableFunc(down, func(a, b int) int { return p.state[a].downUntil.Compare(p.state[b].downUntil) })
	return append(up, down...)
}

// done records the outcome of a request to origin i: failed marks it
// down for its backoff; success marks it up, the one to try first.
func (p *Pool) done(i int, err error, failed bool) {
	outcome := "ok"
	switch {
	case failed:
		outcome = "unavailable"
	case err != nil:
		outcome = "error"
	}
	if p.metrics != nil {
		p.metrics.requests.WithLabelValues(p.urls[i], outcome).Inc()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &p.state[i]
	if failed {
		d := p.min << min(st.fails, 16)
		if d > p.max || d <= 0 {
			d = p.max
		}
		st.fails++
		st.downUntil = p.now().Add(d)
		if p.metrics != nil {
			p.metrics.up.WithLabelValues(p.urls[i]).Set(0)
		}
		return
	}
	if st.fails > 0 {
		p.log.Info("origin back", zap.String("origin", p.urls[i]), zap.Int("failures", st.fails))
		if p.metrics != nil {
			p.metrics.up.WithLabelValues(p.urls[i]).Set(1)
		}
	}
	*st = originState{}
	p.current = i
}

// Unavailable reports whether err says an origin could not answer, so
// another may: a failure to connect or a connection cut off, a timeout, or
// an answer of 502, 503 or 504. An answer that is a refusal (4xx) or
// another server error is the network's answer, the same from any origin.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var re *httpkit.ResponseError
	if errors.As(err, &re) {
		return UnavailableStatus(re.Status)
	}
	var ue interface{ Unavailable() bool }
	if errors.As(err, &ue) {
		return ue.Unavailable()
	}
	var ne net.Error
	var oe *net.OpError
	var ue2 *url.Error
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.As(err, &ue2) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded)
}

// StatusError is an origin's answer of a status outside 2xx, for clients
// that read answers without httpkit; Unavailable reads its Status.
type StatusError struct {
	// URL is what was asked.
	URL string
	// Status is the answer's status code.
	Status int
}

// Error says what was asked and the status.
func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: HTTP %d %s", e.URL, e.Status, http.StatusText(e.Status))
}

// Unavailable reports whether the status says the origin could not answer.
func (e *StatusError) Unavailable() bool { return UnavailableStatus(e.Status) }

// UnavailableStatus reports whether an answer of HTTP status code says the
// origin could not answer (502, 503, 504), so another may.
func UnavailableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

type poolMetrics struct {
	requests  *prometheus.CounterVec
	failovers *prometheus.CounterVec
	up        *prometheus.GaugeVec
}

func newPoolMetrics(reg prometheus.Registerer, component string) *poolMetrics {
	ns := "topcdn_" + component
	return &poolMetrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "_origin_requests_total",
			Help: "Requests to each origin, by outcome: ok, error (the origin's answer) or unavailable (failed over)."}, []string{"origin", "outcome"})),
		failovers: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "_origin_failovers_total",
			Help: "Requests moved from one origin to the next because the first could not answer."}, []string{"from", "to"})),
		up: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "_origin_up",
			Help: "1 while an origin answers, 0 while it is left alone after a failure."}, []string{"origin"})),
	}
}

// register registers c with reg, or returns the collector registered
// before under the same name.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}
