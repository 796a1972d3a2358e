package origin

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/erasure"
	"go.uber.org/zap"
)

// carRetryAfter is the Retry-After, in seconds, of a CAR the origin cannot
// serve whole right now: enough for a peer to send its next heartbeats or
// for repair to run.
const carRetryAfter = "30"

// guardCAR answers, before boxo's gateway writes any byte, the CAR
// requests whose DAG the origin knows it cannot serve whole: boxo sends
// 200 and its headers first, so a DAG it then fails to read would reach
// the client truncated, with a success status. A striped DAG with a
// segment below k healthy shards gets 503 with Retry-After (repair or a
// peer coming back may fix it). Every other request, and every CAR whose
// root the guard cannot name, goes to boxo unchanged.
func (o *Origin) guardCAR(gw http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && wantsCAR(r) {
			if root, ok := o.pathRoot(r.Context(), r.URL.Path); ok {
				if err := o.checkReadable(r.Context(), root); err != nil {
					if errors.Is(err, ErrUnavailable) {
						w.Header().Set("Retry-After", carRetryAfter)
					}
					o.fail(w, err)
					return
				}
			}
		}
		gw.ServeHTTP(w, r)
	})
}

// checkReadable returns nil if the DAG under root can be read whole, by
// what the origin knows, and else the error to answer with: ErrUnavailable
// for a striped segment short of healthy shards.
func (o *Origin) checkReadable(ctx context.Context, root cid.Cid) error {
	err := o.storage.CheckReadable(ctx, root)
	if other, ok := otherVersion(root); ok && err == nil { // striped under the CID version uploaded
		err = o.storage.CheckReadable(ctx, other)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, erasure.ErrNotEnoughShards):
		o.log.Debug("CAR refused: DAG not readable whole", zap.Stringer("root", root), zap.Error(err))
		return errorf(ErrUnavailable, "cannot serve the CAR of %s whole right now (%v); retry later", root, err)
	default:
		return err
	}
}

// wantsCAR reports whether r asks for a CAR: ?format=car or an Accept
// header naming application/vnd.ipld.car, as boxo's gateway reads them.
func wantsCAR(r *http.Request) bool {
	return r.URL.Query().Get("format") == "car" || strings.Contains(r.Header.Get("Accept"), "application/vnd.ipld.car")
}

// pathRoot returns the CID a gateway path starts from: the CID of
// /ipfs/<cid>/…, or the one the stored record of /ipns/<name>/… points at
// (a human name is looked up first). It reports false when it cannot
// tell; boxo then answers as it would.
func (o *Origin) pathRoot(ctx context.Context, p string) (cid.Cid, bool) {
	ns, rest, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if !ok {
		return cid.Undef, false
	}
	first, _, _ := strings.Cut(rest, "/")
	switch ns {
	case "ipfs":
		c, err := cid.Decode(first)
		return c, err == nil
	case "ipns":
		var key string
		if name, err := ipns.NameFromString(first); err == nil {
			key = name.String()
		} else if key, err = o.nameTarget(ctx, first); err != nil {
			return cid.Undef, false
		}
		var value string
		err := o.db.QueryRowContext(ctx, `SELECT value FROM records WHERE ipns = ?`, key).Scan(&value)
		if err != nil || !strings.HasPrefix(value, "/ipfs/") { // one step only: no chains of names
			return cid.Undef, false
		}
		return o.pathRoot(ctx, value)
	}
	return cid.Undef, false
}
