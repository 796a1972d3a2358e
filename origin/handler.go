package origin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// maxJSONBody bounds JSON request bodies: a full MissingRequest is ~0.6 MB.
const maxJSONBody = 1 << 20

// newHandler routes the origin's API next to boxo's gateway:
//
//	POST /api/v1/blocks/missing  which blocks the origin lacks (MissingRequest)
//	POST /api/v1/car             upload a CAR signed for in UploadHeader (UploadResult)
//	GET  /api/v1/publishers/{peer} a publisher's usage and quota (PublisherUsage)
//	GET  /api/v1/publishers/{peer}/check?name=NAME
//	                             may peer upload and claim NAME? (PublisherUsage,
//	                             or the refusal the upload or claim would get)
//	GET  /api/v1/names           every human name ([]NameInfo)
//	GET  /api/v1/names/changes   the signed name-change stream, a long-poll
//	                             (?since=ID&limit=N&wait=S; NameChanges)
//	GET  /api/v1/names/{name}    one human name (NameInfo)
//	PUT  /api/v1/names/{name}    claim or move a name (NameClaim)
//	POST /api/v1/names/{name}/purge
//	                             drop edges' cached answers for a name (a
//	                             Purge envelope; {"id": change ID})
//	GET  /api/v1/names/{name}/history  the roots the name pointed at (NameHistory)
//	PUT  /ipns/{name}            store an IPNS record, as `ipfs routing put`
//	GET  /api/v1/billing/log     the signed billing log (?since=ID&limit=N; BillingLog)
//	GET  /ipfs/…, /ipns/…        the Trustless Gateway (boxo); CARs the origin
//	                             cannot serve whole are refused first (guardCAR)
//	GET  /metrics, /healthz
func (o *Origin) newHandler() (http.Handler, error) {
	gw, err := o.newGateway()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	route := httpkit.Metrics{Requests: o.metrics.requests, Duration: o.metrics.duration, Log: o.log}.Router(mux)
	route("POST /api/v1/blocks/missing", "missing", o.serveMissing)
	route("POST /api/v1/car", "car", o.serveUpload)
	route("GET /api/v1/publishers/{peer}", "publisher", o.serveUsage)
	route("GET /api/v1/publishers/{peer}/check", "publish_check", o.serveCheckPublish)
	route("GET /api/v1/names", "names", o.serveNames)
	// More specific than /api/v1/names/{name}, so it wins; "changes" is
	// a reserved name (originapi.ValidateName), so no name is shadowed.
	route("GET /api/v1/names/changes", "name_changes", o.serveNameChanges)
	route("GET /api/v1/names/{name}", "name", o.serveName)
	route("PUT /api/v1/names/{name}", "claim", o.serveClaim)
	route("POST /api/v1/names/{name}/purge", "purge", o.servePurge)
	route("GET /api/v1/names/{name}/history", "name_history", o.serveNameHistory)
	route("PUT /ipns/{name}", "ipns_put", o.servePutRecord)
	route("GET /api/v1/billing/log", "billing_log", o.serveBillingLog)
	route("POST /api/v1/peers/heartbeat", "heartbeat", o.serveHeartbeat)
	route("GET /api/v1/peers", "peers", o.servePeers)
	route("GET /api/v1/manifests/{root}", "manifest", o.serveManifest)
	route("GET /api/v1/storage/status", "storage_status", o.serveStorageStatus)
	route("POST /api/v1/storage/audit", "audit", o.serveAuditAll)
	gw = o.guardCAR(gw)
	mux.Handle("/ipfs/", gw)
	mux.Handle("/ipns/", gw)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", o.serveHealth)
	return mux, nil
}

func (o *Origin) fail(w http.ResponseWriter, err error) {
	if httpkit.StatusOf(err) == http.StatusInternalServerError {
		o.log.Error("request failed", zap.Error(err))
	}
	var rl *retryLater
	if errors.As(err, &rl) {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(max((rl.after+time.Second-1)/time.Second, 1)), 10))
	}
	httpkit.WriteError(w, err)
}

func (o *Origin) serveMissing(w http.ResponseWriter, r *http.Request) {
	var req originapi.MissingRequest
	if err := decodeJSON(w, r, &req); err != nil {
		o.fail(w, err)
		return
	}
	if len(req.CIDs) > originapi.MaxMissingQuery {
		o.fail(w, errorf(ErrTooLarge, "%d CIDs asked; at most %d per request", len(req.CIDs), originapi.MaxMissingQuery))
		return
	}
	cs := make([]cid.Cid, len(req.CIDs))
	for i, s := range req.CIDs {
		c, err := cid.Decode(s)
		if err != nil {
			o.fail(w, errorf(ErrBadRequest, "cids[%d] %q: malformed CID: %v", i, s, err))
			return
		}
		cs[i] = c
	}
	missing, err := o.Missing(r.Context(), cs)
	if err != nil {
		o.fail(w, err)
		return
	}
	resp := originapi.MissingResponse{Missing: make([]string, len(missing))}
	for i, c := range missing {
		resp.Missing[i] = c.String()
	}
	httpkit.WriteJSON(w, http.StatusOK, resp)
}

func (o *Origin) serveUpload(w http.ResponseWriter, r *http.Request) {
	res, err := o.upload(w, r)
	o.metrics.countUpload(res, err)
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			w.Header().Set("WWW-Authenticate", originapi.UploadHeader)
		}
		if errors.Is(err, ErrBusy) {
			w.Header().Set("Retry-After", "5")
		}
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusCreated, res)
}

// upload takes an upload slot, checks the request's authorization and
// ingests its CAR. Refusals on the header come before the body is read,
// so a client that sent Expect: 100-continue sends no body for them.
func (o *Origin) upload(w http.ResponseWriter, r *http.Request) (*originapi.UploadResult, error) {
	select {
	case o.uploads <- struct{}{}:
		defer func() { <-o.uploads }()
	default:
		return nil, errorf(ErrBusy, "%d uploads already in progress; retry shortly", cap(o.uploads))
	}
	up, err := o.AuthorizeUpload(r.Context(), r.Header.Get(originapi.UploadHeader))
	if err != nil {
		return nil, err
	}
	return o.Ingest(r.Context(), up, http.MaxBytesReader(w, r.Body, o.cfg.MaxUploadSize))
}

func (o *Origin) serveNames(w http.ResponseWriter, r *http.Request) {
	names, err := o.Names(r.Context())
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, names)
}

func (o *Origin) serveName(w http.ResponseWriter, r *http.Request) {
	ni, err := o.LookupName(r.Context(), r.PathValue("name"))
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, ni)
}

func (o *Origin) serveClaim(w http.ResponseWriter, r *http.Request) {
	var claim originapi.NameClaim
	if err := decodeJSON(w, r, &claim); err != nil {
		o.fail(w, err)
		return
	}
	name, err := ipns.NameFromString(claim.IPNS)
	if err != nil {
		o.fail(w, errorf(ErrBadRequest, "ipns %q: not an IPNS name: %v", claim.IPNS, err))
		return
	}
	ni, err := o.ClaimName(r.Context(), r.PathValue("name"), name, claim.Record)
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, ni)
}

func (o *Origin) servePutRecord(w http.ResponseWriter, r *http.Request) {
	name, err := ipns.NameFromString(r.PathValue("name"))
	if err != nil {
		o.fail(w, errorf(ErrBadRequest, "%q is not an IPNS name: %v", r.PathValue("name"), err))
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(ipns.MaxRecordSize)))
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &maxBytes):
		o.fail(w, errorf(ErrTooLarge, "IPNS record over %d bytes", ipns.MaxRecordSize))
		return
	case err != nil:
		o.fail(w, errorf(ErrBadRequest, "IPNS record: %v", err))
		return
	}
	changed, err := o.PutRecord(r.Context(), name, raw)
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, map[string]any{"ipns": name.String(), "changed": changed})
}

// decodeJSON reads one JSON value of at most maxJSONBody bytes.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			return errorf(ErrTooLarge, "request body over %d bytes", maxJSONBody)
		}
		return errorf(ErrBadRequest, "malformed JSON body: %v", err)
	}
	if dec.More() {
		return errorf(ErrBadRequest, "malformed JSON body: trailing data")
	}
	return nil
}
