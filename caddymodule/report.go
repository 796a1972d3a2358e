package caddymodule

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/edge"
	"github.com/topcdn/topcdn/internal/tick"
	"go.uber.org/zap"
)

// recorder hands the edge's response records to the billing reporter.
type recorder struct{ r *billingapi.Reporter }

func (r recorder) Record(s edge.Served) {
	r.r.Observe(billingapi.Served{Name: s.Name, CID: s.CID, Root: s.Root, Path: s.Path, Bytes: s.Bytes,
		Status: s.Status, Time: s.Time, Client: s.Client})
}

// validateReporting checks the router and billing options.
func (h *Handler) validateReporting() error {
	for _, u := range []struct{ name, v string }{{"router", h.Router}, {"billing", h.Billing}, {"public_url", h.PublicURL}} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("topcdn: %s %q: want http(s)://host[:port]", u.name, u.v)
		}
	}
	if h.Router == "" {
		return nil
	}
	if h.PublicURL == "" {
		return fmt.Errorf("topcdn: router needs public_url, the edge's URL as browsers reach it")
	}
	addrs, err := h.publicAddrs()
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return fmt.Errorf("topcdn: public_url %q has no IP address; give public_addr", h.PublicURL)
	}
	_, _, err = parseLocation(h.Location)
	return err
}

// publicAddrs returns the addresses to hand out: PublicAddrs, or the IP of
// PublicURL's host.
func (h *Handler) publicAddrs() ([]string, error) {
	if len(h.PublicAddrs) > 0 {
		for _, a := range h.PublicAddrs {
			if _, err := netip.ParseAddr(a); err != nil {
				return nil, fmt.Errorf("topcdn: public_addr %q is not an IP address", a)
			}
		}
		return h.PublicAddrs, nil
	}
	u, err := url.Parse(h.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("topcdn: public_url: %w", err)
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		return []string{a.String()}, nil
	}
	return nil, nil
}

// httpsURL is the HTTPS URL heartbeats report: public_url's host on
// https_port; "" without https_port.
func (h *Handler) httpsURL() string {
	u, err := url.Parse(h.PublicURL)
	if h.HTTPSPort == 0 || err != nil || u.Hostname() == "" {
		return ""
	}
	return "https://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(h.HTTPSPort))
}

// parseLocation parses "LAT,LON"; "" is no location.
func parseLocation(s string) (lat, lon *float64, err error) {
	if s == "" {
		return nil, nil, nil
	}
	a, b, ok := strings.Cut(s, ",")
	la, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
	lo, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
	if !ok || err1 != nil || err2 != nil || la < -90 || la > 90 || lo < -180 || lo > 180 {
		return nil, nil, fmt.Errorf("topcdn: location %q: want LAT,LON in degrees", s)
	}
	return &la, &lo, nil
}

// startBackground runs the heartbeats and the billing reporter until ctx
// ends (Destruct).
func (in *instance) startBackground(ctx context.Context) {
	var tasks []func()
	if in.reporter != nil {
		tasks = append(tasks, func() { in.reporter.Run(ctx) })
	}
	if in.conf.Router != "" {
		tasks = append(tasks, func() { in.heartbeats(ctx) })
	}
	if in.conf.NameStream == nil || *in.conf.NameStream {
		tasks = append(tasks, func() { in.edge.FollowNames(ctx) })
	}
	remaining := make(chan struct{}, len(tasks))
	for _, t := range tasks {
		go func() {
			defer func() { remaining <- struct{}{} }()
			t()
		}()
	}
	go func() {
		for range tasks {
			<-remaining
		}
		close(in.done)
	}()
}

// stopBackground stops the background work and waits for it (the
// reporter's last post is bounded by 10 s).
func (in *instance) stopBackground() {
	in.stop()
	select {
	case <-in.done:
	case <-time.After(15 * time.Second):
		in.conf.logger.Warn("background work did not stop within 15 s")
	}
}

// heartbeats sends the router a signed heartbeat every HeartbeatInterval:
// where the edge is, and its load since the last one.
func (in *instance) heartbeats(ctx context.Context) {
	h, key := in.conf, in.key
	interval := time.Duration(h.HeartbeatInterval)
	client := &http.Client{Timeout: max(interval, 2*time.Second)}
	addrs, _ := h.publicAddrs()
	lat, lon, _ := parseLocation(h.Location)
	httpsURL := h.httpsURL()
	log := h.logger.Named("heartbeat")
	prev, prevAt := in.edge.Stats(), time.Now()
	failing := false
	tick.NowAndEvery(ctx, interval, func(ctx context.Context) {
		now, st := time.Now(), in.edge.Stats()
		load := 0.0
		if d := now.Sub(prevAt).Seconds(); d > 0 {
			load = float64(st.Requests-prev.Requests) / d
		}
		prev, prevAt = st, now
		hb := dnsrouteapi.Heartbeat{Peer: key.ID.String(), Addrs: addrs, URL: strings.TrimSuffix(h.PublicURL, "/"),
			HTTPSURL: httpsURL, City: h.City, Lat: lat, Lon: lon, Load: load, Capacity: h.Capacity,
			IntervalMS: interval.Milliseconds(), Time: now.UTC(),
			Requests: st.Requests, Bytes: st.Bytes, CacheHits: st.ResponseHits + st.BlockHits, CacheMisses: st.BlockMisses}
		if in.reporter != nil {
			// What billing may pay this edge per epoch is bounded by
			// what its heartbeats said it served in it.
			tot := in.reporter.Totals()
			hb.Epoch, hb.EpochBytes, hb.PrevEpoch, hb.PrevEpochBytes = tot.Epoch, tot.Bytes, tot.Prev, tot.PrevBytes
		}
		switch err := dnsrouteapi.SendHeartbeat(ctx, client, h.Router, key, hb); {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			log.Warn("the router refused or missed a heartbeat", zap.String("router", h.Router), zap.Error(err))
		case err == nil && failing:
			failing = false
			log.Info("heartbeats reach the router again", zap.String("router", h.Router))
		}
	})
}
