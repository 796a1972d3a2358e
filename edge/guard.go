package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/ipfs/boxo/gateway"
)

// maxPathSegments bounds the segments of a request's path (the path
// gateway's /ipfs/{cid} counts two; Edge.pathBound). boxo's gateway
// resolves every prefix of a content path from its root, so the work of
// a path grows with the square of its depth: a path thousands of links
// deep into a deep DAG kept a core busy for minutes; 30 links cost 17 ms.
// No site is that deep.
const maxPathSegments = 32

// maxBlocksPerRequest bounds the blocks one request may read, from the
// caches or upstream (Edge.blockBudget): 256 GiB of a file in the default
// 256 KiB chunks. Past it the request fails (with errTooMuchWork, 400, if
// nothing was sent yet).
const maxBlocksPerRequest = 1 << 20

// errTooMuchWork is a request that needs more block reads than an edge
// spends on one.
var errTooMuchWork = gateway.NewErrorStatusCode(
	errors.New("the request needs more block reads than an edge spends on one"), http.StatusBadRequest)

// requestWork is what a request has cost so far, and may cost;
// withRequestGuard puts one in each request's context.
type requestWork struct {
	blocks    atomic.Int64
	maxBlocks int64
}

type requestWorkKey struct{}

// spend counts one block read for the request of ctx, if any, and fails
// once the request is over its budget or its context has ended (the
// client left): every loop that reads blocks (path resolution, UnixFS
// reads, CAR walks) stops at its next block.
func spend(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if w, ok := ctx.Value(requestWorkKey{}).(*requestWork); ok && w.blocks.Add(1) > w.maxBlocks {
		return errTooMuchWork
	}
	return nil
}

// withRequestGuard refuses paths that could leave their content root or
// cost too much, before anything resolves them, and gives each request a
// work budget (spend).
func (e *Edge) withRequestGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, err := checkPath(r, e.pathBound); err != nil {
			http.Error(w, err.Error(), status)
			return
		}
		work := &requestWork{maxBlocks: e.blockBudget}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestWorkKey{}, work)))
	})
}

// checkPath reports why r's path is refused, with the status to answer,
// or nil; maxSegments bounds its segments.
//
// boxo's gateway cleans the decoded path (path.NewPath) after the
// hostname handler prefixed it with a site's or subdomain's root, so dot
// segments, and slashes sent encoded (%2F) that decode into new segments,
// would walk out of /ipfs/{cid} or /ipns/{name}:
// /ipfs/{cid}/..%2f..%2fipns%2f{other} served another name. No UnixFS
// name holds a slash, and browsers remove dot segments before they send a
// URL, so such paths are refused, not cleaned.
func checkPath(r *http.Request, maxSegments int) (int, error) {
	if strings.Contains(strings.ToLower(r.URL.EscapedPath()), "%2f") {
		return http.StatusBadRequest, errors.New("an encoded slash (%2F) in the path")
	}
	segments := 0
	for seg := range strings.SplitSeq(r.URL.Path, "/") {
		switch seg {
		case "":
		case ".", "..":
			return http.StatusBadRequest, errors.New("a dot segment in the path")
		default:
			segments++
		}
	}
	if segments > maxSegments {
		return http.StatusRequestURITooLong, fmt.Errorf("the path has %d segments, over %d", segments, maxSegments)
	}
	return 0, nil
}
