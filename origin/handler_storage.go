package origin

import (
	"net"
	"net/http"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
)

// The storage side's routes: the origin answers them from its Keeper
// (durability), whose errors statusOf maps like its own.

func (o *Origin) serveHeartbeat(w http.ResponseWriter, r *http.Request) {
	var env identity.Envelope
	if err := decodeJSON(w, r, &env); err != nil {
		o.fail(w, err)
		return
	}
	if err := o.storage.Heartbeat(r.Context(), &env); err != nil {
		o.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (o *Origin) servePeers(w http.ResponseWriter, r *http.Request) {
	peers, err := o.storage.Peers(r.Context())
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, peers)
}

func (o *Origin) serveManifest(w http.ResponseWriter, r *http.Request) {
	root, err := cid.Decode(r.PathValue("root"))
	if err != nil {
		o.fail(w, errorf(ErrBadRequest, "root %q: %v", r.PathValue("root"), err))
		return
	}
	env, err := o.storage.ManifestEnvelope(r.Context(), root)
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, env)
}

func (o *Origin) serveStorageStatus(w http.ResponseWriter, r *http.Request) {
	st, err := o.storage.Status(r.Context())
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, st)
}

func (o *Origin) serveAuditAll(w http.ResponseWriter, r *http.Request) {
	// A full sweep loads every peer: only the operator, on this host, may ask.
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !net.ParseIP(host).IsLoopback() {
		o.fail(w, errorf(ErrForbidden, "audits can only be started from the origin's host"))
		return
	}
	failed, err := o.storage.AuditAll(r.Context())
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, map[string]int{"failed": failed})
}
