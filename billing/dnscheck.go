package billing

import (
	"context"
	"errors"
	"time"

	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"go.uber.org/zap"
)

// dnsEdges returns the router's edges by peer ID, cached for 5 s, or nil
// and false when no router is configured or it cannot be reached.
func (l *Ledger) dnsEdges(ctx context.Context) (map[string]witness.EdgeInfo, bool) {
	return l.dnsEdgesWithin(ctx, 5*time.Second)
}

// dnsEdgesWithin is dnsEdges with a cache no older than maxAge (0: ask
// the router).
func (l *Ledger) dnsEdgesWithin(ctx context.Context, maxAge time.Duration) (map[string]witness.EdgeInfo, bool) {
	if l.opts.DNS == nil {
		return nil, false
	}
	l.dnsMu.Lock()
	defer l.dnsMu.Unlock()
	if l.dnsCache != nil && l.opts.now().Sub(l.dnsAt) < maxAge {
		return l.dnsCache, true
	}
	list, err := l.opts.DNS.Edges(ctx)
	if err != nil {
		l.log.Warn("DNS router unreachable: cross-check skipped", zap.Error(err))
		return nil, false
	}
	m := make(map[string]witness.EdgeInfo, len(list))
	for _, e := range list {
		m[e.Peer] = e
	}
	l.dnsCache, l.dnsAt = m, l.opts.now()
	return m, true
}

// checkDNS judges a batch's claimed total against the router's view:
//
//   - an edge the router never handed out (unlisted, or zero answers) may
//     claim at most DNSFreeBytes per batch;
//   - a listed edge whose heartbeats report its byte counter may claim,
//     for the batch's (edge, epoch) with its other parts, at most what
//     checkHeartbeats allows.
//
// Honest edges in a small devnet are handed out or serve little; a router
// that cannot be reached skips the check rather than fail honest edges.
func (l *Ledger) checkDNS(ctx context.Context, edge string, b *billingapi.Batch, digest string) error {
	total := claimed(b.Records)
	edges, ok := l.dnsEdges(ctx)
	switch {
	case l.opts.DNS == nil:
		l.metrics.dnsCheck.WithLabelValues("unconfigured").Inc()
		return nil
	case !ok:
		l.metrics.dnsCheck.WithLabelValues("skipped").Inc()
		return nil
	}
	e, listed := edges[edge]
	if (!listed || e.Answers == 0) && total > l.opts.DNSFreeBytes {
		l.metrics.dnsCheck.WithLabelValues("rejected").Inc()
		return reject(billingapi.ReasonDNSImplausible, "edge claims %d bytes but the DNS router never handed it out (listed %v, answers %d); at most %d bytes accepted",
			total, listed, e.Answers, l.opts.DNSFreeBytes)
	}
	if listed {
		switch err := l.checkHeartbeats(ctx, edge, b, digest, total, e); {
		case reasonOf(err) != "":
			l.metrics.dnsCheck.WithLabelValues("rejected").Inc()
			return err
		case errors.Is(err, errHeartbeatBehind):
			l.metrics.dnsCheck.WithLabelValues("deferred").Inc()
			return err
		case err != nil:
			return err
		}
	}
	l.metrics.dnsCheck.WithLabelValues("ok").Inc()
	return nil
}
