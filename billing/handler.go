package billing

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"go.uber.org/zap"
)

// Handler returns the billing API:
//
//	POST /api/v1/batches               an edge's signed batch (BatchResult)
//	POST /api/v1/claims                a storage peer's signed claim (ClaimResult)
//	POST /api/v1/deposits              a deposit signed by the operator key (Account)
//	POST /api/v1/admissions            an edge's admission signed by the operator key (AdmittedEdge)
//	GET  /api/v1/admissions            the edges admitted now (AdmittedResponse)
//	POST /api/v1/settle                settle every closed epoch (SettleResult)
//	GET  /api/v1/accounts              every account ([]Account)
//	GET  /api/v1/accounts/{id}         one account (Account)
//	GET  /api/v1/accounts/{id}/statement  entries and rejections (Statement)
//	POST /api/v1/accounts/{id}/keys       link a key to the account: a KeyLink signed by the account
//	                                      around the key's KeyConsent (KeyLinkInfo)
//	DELETE /api/v1/accounts/{id}/keys/{key}  unlink it: a KeyUnlink signed by the account, in
//	                                      the body (KeyLinkInfo)
//	GET  /api/v1/accounts/{id}/keys       the account's links (KeyLinksResponse)
//	GET  /api/v1/accounts/{id}/sites      what was served for the account's own and linked keys in the
//	                                      last ended epoch and this UTC month (AccountSites)
//	GET  /api/v1/publishers/{key}/served[?from=UNIX&to=UNIX]  what was served for a key per epoch,
//	                                      and its top paths (ServedHistory; default the last 30 days)
//	GET  /api/v1/served                accepted bytes served per publisher ([]PublisherServed)
//	GET  /api/v1/suspended             publishers out of funds past the grace period
//	GET  /api/v1/forfeits[?since=UNIX]  epochs edges forfeited since (default: the last 24 h)
//	GET  /metrics, /healthz
//
// gatherer serves /metrics; nil serves the default gatherer.
func (l *Ledger) Handler(gatherer prometheus.Gatherer) http.Handler {
	if gatherer == nil {
		gatherer = prometheus.DefaultGatherer
	}
	mux := http.NewServeMux()
	route := httpkit.Metrics{Requests: l.metrics.requests}.Router(mux)
	route("POST /api/v1/batches", "batches", l.serveBatch)
	route("POST /api/v1/claims", "claims", l.serveClaim)
	route("POST /api/v1/deposits", "deposits", l.serveDeposit)
	route("POST "+billingapi.AdmittedPath, "admissions", func(w http.ResponseWriter, r *http.Request) {
		env, err := readEnvelope(r, maxDepositBody)
		if err != nil {
			l.reply(w, nil, err)
			return
		}
		res, err := l.Admit(r.Context(), env)
		l.reply(w, res, err)
	})
	route("GET "+billingapi.AdmittedPath, "admitted", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Admitted(r.Context())
		l.reply(w, billingapi.AdmittedResponse{Edges: res}, err)
	})
	route("POST /api/v1/settle", "settle", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Settle(r.Context())
		l.reply(w, res, err)
	})
	route("GET /api/v1/accounts", "accounts", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Accounts(r.Context())
		l.reply(w, res, err)
	})
	route("GET /api/v1/accounts/{id}", "account", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Account(r.Context(), r.PathValue("id"))
		l.reply(w, res, err)
	})
	route("GET /api/v1/accounts/{id}/statement", "statement", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Statement(r.Context(), r.PathValue("id"))
		l.reply(w, res, err)
	})
	route("POST /api/v1/accounts/{id}/keys", "key_link", func(w http.ResponseWriter, r *http.Request) {
		env, err := readEnvelope(r, maxDepositBody)
		if err != nil {
			l.reply(w, nil, err)
			return
		}
		res, err := l.LinkKey(r.Context(), r.PathValue("id"), env)
		l.reply(w, res, err)
	})
	// The unlink travels in the body, as every signed message of the API
	// does, not in a header.
	route("DELETE /api/v1/accounts/{id}/keys/{key}", "key_unlink", func(w http.ResponseWriter, r *http.Request) {
		env, err := readEnvelope(r, maxDepositBody)
		if err != nil {
			l.reply(w, nil, err)
			return
		}
		res, err := l.UnlinkKey(r.Context(), r.PathValue("id"), r.PathValue("key"), env)
		l.reply(w, res, err)
	})
	route("GET /api/v1/accounts/{id}/keys", "key_links", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.KeyLinks(r.Context(), r.PathValue("id"))
		l.reply(w, billingapi.KeyLinksResponse{Keys: res}, err)
	})
	route("GET /api/v1/accounts/{id}/sites", "account_sites", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.AccountSites(r.Context(), r.PathValue("id"))
		l.reply(w, res, err)
	})
	route("GET /api/v1/publishers/{key}/served", "publisher_served", l.serveServedHistory)
	route("GET /api/v1/served", "served", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Served(r.Context())
		l.reply(w, res, err)
	})
	route("GET /api/v1/suspended", "suspended", func(w http.ResponseWriter, r *http.Request) {
		res, err := l.Suspended(r.Context())
		l.reply(w, billingapi.SuspendedResponse{Publishers: res}, err)
	})
	route("GET /api/v1/forfeits", "forfeits", l.serveForfeits)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := l.db.PingContext(r.Context()); err != nil {
			l.reply(w, nil, err)
			return
		}
		l.reply(w, map[string]string{"status": "ok", "operator": l.operator.String(),
			"epoch": l.opts.Epoch.String()}, nil)
	})
	return mux
}

// readEnvelope reads a JSON envelope from the request body.
// Bodies of the other messages are far smaller than a batch's.
const (
	maxClaimBody   = 16 << 20 // MaxClaimOrders orders of a few hundred bytes
	maxDepositBody = 64 << 10
)

func readEnvelope(r *http.Request, limit int64) (*identity.Envelope, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, reject(billingapi.ReasonMalformed, "read body: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, reject(billingapi.ReasonMalformed, "body over %d bytes", limit)
	}
	env, err := billingapi.DecodeEnvelope(body)
	if err != nil {
		return nil, &RejectError{Reason: billingapi.ReasonMalformed, Err: err}
	}
	return env, nil
}

// remoteAddr returns the request's peer address.
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// serveForfeits lists the epochs forfeited since the Unix time in the
// since parameter, or in the last DefaultForfeitsWindow.
func (l *Ledger) serveForfeits(w http.ResponseWriter, r *http.Request) {
	since := l.opts.now().Add(-billingapi.DefaultForfeitsWindow)
	if s := r.URL.Query().Get("since"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			l.reply(w, nil, reject(billingapi.ReasonMalformed, "since %q: want Unix seconds: %v", s, err))
			return
		}
		since = time.Unix(n, 0)
	}
	res, err := l.Forfeits(r.Context(), since)
	l.reply(w, billingapi.ForfeitsResponse{Forfeits: res}, err)
}

// serveServedHistory answers what was served for a key over the window
// of the from and to parameters (Unix seconds; see ServedHistory).
func (l *Ledger) serveServedHistory(w http.ResponseWriter, r *http.Request) {
	var window [2]time.Time
	for i, p := range []string{"from", "to"} {
		s := r.URL.Query().Get(p)
		if s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n > 1<<40 {
			l.reply(w, nil, reject(billingapi.ReasonMalformed, "%s %.32q: want Unix seconds", p, s))
			return
		}
		window[i] = time.Unix(n, 0)
	}
	res, err := l.ServedHistory(r.Context(), r.PathValue("key"), window[0], window[1])
	l.reply(w, res, err)
}

func (l *Ledger) serveBatch(w http.ResponseWriter, r *http.Request) {
	env, err := readEnvelope(r, billingapi.MaxBatchSize)
	if err != nil {
		l.reply(w, nil, err)
		return
	}
	res, err := l.IngestBatch(r.Context(), env, remoteAddr(r))
	l.reply(w, res, err)
}

func (l *Ledger) serveClaim(w http.ResponseWriter, r *http.Request) {
	env, err := readEnvelope(r, maxClaimBody)
	if err != nil {
		l.reply(w, nil, err)
		return
	}
	res, err := l.IngestClaim(r.Context(), env)
	l.reply(w, res, err)
}

func (l *Ledger) serveDeposit(w http.ResponseWriter, r *http.Request) {
	env, err := readEnvelope(r, maxDepositBody)
	if err != nil {
		l.reply(w, nil, err)
		return
	}
	res, err := l.Deposit(r.Context(), env)
	l.reply(w, res, err)
}

// reply writes v as JSON, or maps err to its status: refusals 422 (bad
// signatures 403, replays 409), conflicts 409, ErrNotFound 404,
// transient failures 503, others 500.
func (l *Ledger) reply(w http.ResponseWriter, v any, err error) {
	if err == nil {
		httpkit.WriteJSON(w, http.StatusOK, v)
		return
	}
	code := http.StatusInternalServerError
	reason := reasonOf(err)
	switch {
	case reason == billingapi.ReasonSignature:
		code = http.StatusForbidden
	case reason == billingapi.ReasonReplayBatch:
		code = http.StatusConflict
	case reason != "":
		code = http.StatusUnprocessableEntity
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, errTransient):
		code = http.StatusServiceUnavailable
	}
	if code >= 500 {
		l.log.Error("request failed", zap.Error(err))
	}
	httpkit.WriteJSON(w, code, billingapi.ErrorResponse{Error: err.Error(), Reason: reason})
}
