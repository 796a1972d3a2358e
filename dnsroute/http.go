package dnsroute

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/miekg/dns"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
)

// DoHPath is where the router serves DNS-over-HTTPS (RFC 8484).
const DoHPath = "/dns-query"

// dohType is the media type of DNS messages over HTTP.
const dohType = "application/dns-message"

// Handler returns the router's HTTP API:
//
//	POST /api/v1/edges/heartbeat   an edge's signed heartbeat (Heartbeat in an identity.Envelope)
//	GET  /api/v1/edges             the edges known ([]EdgeInfo)
//	POST /api/v1/acme/challenges   an edge's signed ACME challenge record (Challenge in an identity.Envelope)
//	DELETE /api/v1/acme/challenges the same, to delete
//	GET  /dns-query?dns=…          DNS-over-HTTPS, RFC 8484 (base64url query)
//	POST /dns-query                DNS-over-HTTPS, body application/dns-message
//	GET  /healthz                  200 once names were read from the origin, else 503
func (r *Router) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+dnsrouteapi.HeartbeatPath, r.serveHeartbeat)
	mux.HandleFunc("GET "+dnsrouteapi.EdgesPath, r.serveEdges)
	mux.HandleFunc("POST "+dnsrouteapi.ChallengePath, r.serveChallenge)
	mux.HandleFunc("DELETE "+dnsrouteapi.ChallengePath, r.serveChallenge)
	mux.HandleFunc("GET "+DoHPath, r.serveDoH)
	mux.HandleFunc("POST "+DoHPath, r.serveDoH)
	mux.HandleFunc("GET /healthz", r.serveHealth)
	return mux
}

// writeError answers with status and {"error": err's text}; unlike
// httpkit.WriteError, a 500's text has no "internal error: " prefix, as
// the router always answered.
func writeError(w http.ResponseWriter, status int, err error) {
	httpkit.WriteJSON(w, status, map[string]string{"error": err.Error()})
}

func (r *Router) serveHeartbeat(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, dnsrouteapi.MaxHeartbeatBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("heartbeat body: %w", err))
		return
	}
	var env identity.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("heartbeat: want a JSON envelope: %w", err))
		return
	}
	if err := r.AcceptHeartbeat(req.Context(), &env); err != nil {
		writeError(w, heartbeatStatus(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *Router) serveEdges(w http.ResponseWriter, _ *http.Request) {
	httpkit.WriteJSON(w, http.StatusOK, r.Edges())
}

func (r *Router) serveHealth(w http.ResponseWriter, _ *http.Request) {
	s := r.snap.Load()
	st := http.StatusOK
	ready := r.Ready()
	if !ready {
		st = http.StatusServiceUnavailable
	}
	doc := map[string]any{"zone": r.cfg.Zone, "names_read": ready, "names": len(s.names), "healthy_edges": len(s.edges)}
	if r.cfg.ID != "" {
		doc["peer"] = r.cfg.ID.String()
	}
	httpkit.WriteJSON(w, st, doc)
}

// serveDoH answers DNS-over-HTTPS (RFC 8484). The client is located by the
// HTTP peer's address, or by an ECS option in the query. Answers are not
// truncated; the Cache-Control max-age is the smallest TTL in the answer.
func (r *Router) serveDoH(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	var raw []byte
	var err error
	if req.Method == http.MethodGet {
		q := req.URL.Query().Get("dns")
		if q == "" {
			writeError(w, http.StatusBadRequest, errors.New("doh: no dns parameter"))
			return
		}
		raw, err = base64.RawURLEncoding.DecodeString(q)
	} else {
		if ct := req.Header.Get("Content-Type"); ct != dohType {
			writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("doh: content type %q, want %s", ct, dohType))
			return
		}
		raw, err = io.ReadAll(http.MaxBytesReader(w, req.Body, dns.MaxMsgSize))
	}
	if err != nil || len(raw) > dns.MaxMsgSize {
		writeError(w, http.StatusBadRequest, fmt.Errorf("doh: reading the query: %w", err))
		return
	}
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil || q.Response {
		writeError(w, http.StatusBadRequest, fmt.Errorf("doh: not a DNS query: %w", err))
		return
	}
	var src netip.Addr
	if ap, err := netip.ParseAddrPort(req.RemoteAddr); err == nil {
		src = ap.Addr().Unmap()
	} else if h, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		src, _ = netip.ParseAddr(h)
	}
	ctx, cancel := context.WithTimeout(req.Context(), queryTimeout)
	defer cancel()
	m, handed := r.answerWire(ctx, r.snap.Load(), q, raw, src)
	b, err := m.Pack()
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("doh: pack: %w", err))
		return
	}
	ttl := uint32(r.cfg.TTL / time.Second)
	for _, rr := range append(append(m.Answer[:len(m.Answer):len(m.Answer)], m.Ns...), m.Extra...) {
		if rr.Header().Rrtype != dns.TypeOPT {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	w.Header().Set("Content-Type", dohType)
	w.Header().Set("Cache-Control", "max-age="+strconv.FormatUint(uint64(ttl), 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
	r.count(handed, src, r.snap.Load())
	r.metrics.queries.WithLabelValues(typeLabel(qtype(q)), rcodeLabel(m.Rcode)).Inc()
	r.metrics.duration.WithLabelValues("doh").Observe(time.Since(start).Seconds())
}

// heartbeatStatus maps a heartbeat error to an HTTP status code.
func heartbeatStatus(err error) int {
	switch {
	case errors.Is(err, dnsrouteapi.ErrForgedHeartbeat), errors.Is(err, dnsrouteapi.ErrEdgeNotAllowed):
		return http.StatusForbidden
	case errors.Is(err, dnsrouteapi.ErrStaleHeartbeat):
		return http.StatusUnprocessableEntity
	case errors.Is(err, dnsrouteapi.ErrReplayedHeartbeat):
		return http.StatusConflict
	case errors.Is(err, dnsrouteapi.ErrInvalidHeartbeat):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}
