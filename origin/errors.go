package origin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/topcdn/topcdn/internal/httpkit"
)

// Sentinel errors, each answered with the HTTP status it is declared
// with. errorf builds the origin's errors of each kind.
var (
	// ErrBadRequest marks malformed input: a bad CID, CAR, record or name.
	ErrBadRequest error = httpkit.Error(http.StatusBadRequest, errors.New("bad request"))
	// ErrTooLarge marks input over a size limit.
	ErrTooLarge error = httpkit.Error(http.StatusRequestEntityTooLarge, errors.New("too large"))
	// ErrConflict marks a rolled-back record or a name owned by another key.
	ErrConflict error = httpkit.Error(http.StatusConflict, errors.New("conflict"))
	// ErrIncomplete marks an upload or record whose DAG is not all at the
	// origin.
	ErrIncomplete error = httpkit.Error(http.StatusUnprocessableEntity, errors.New("incomplete DAG"))
	// ErrNotFound marks an unknown name.
	ErrNotFound error = httpkit.Error(http.StatusNotFound, errors.New("not found"))
	// ErrForbidden marks a request the caller may not make: a signature
	// that does not verify, a key not allowed, a CAR other than the one
	// signed for.
	ErrForbidden error = httpkit.Error(http.StatusForbidden, errors.New("forbidden"))
	// ErrUnauthorized marks a request that lacks a usable signed
	// authorization: none, malformed, or outside its time window.
	ErrUnauthorized error = httpkit.Error(http.StatusUnauthorized, errors.New("unauthorized"))
	// ErrOverQuota marks an upload that would take its publisher over its
	// byte quota.
	ErrOverQuota error = httpkit.Error(http.StatusRequestEntityTooLarge, errors.New("over quota"))
	// ErrPaymentRequired marks an upload of a publisher who cannot pay
	// (Config.Funds).
	ErrPaymentRequired error = httpkit.Error(http.StatusPaymentRequired, errors.New("payment required"))
	// ErrBusy marks a request refused for load; the client should retry.
	ErrBusy error = httpkit.Error(http.StatusServiceUnavailable, errors.New("busy"))
	// ErrTooManyLinks marks an upload with a block of more than
	// MaxLinksPerBlock links.
	ErrTooManyLinks error = httpkit.Error(http.StatusUnprocessableEntity, errors.New("too many links"))
	// ErrDAGTooDeep marks an upload with a block whose DAG, blocks stored
	// before included, is more than MaxDAGDepth deep.
	ErrDAGTooDeep error = httpkit.Error(http.StatusUnprocessableEntity, errors.New("dag too deep"))
	// ErrDAGTooLarge marks an upload with a block whose DAG, blocks stored
	// before included, may hold more than MaxDAGBlocks blocks.
	ErrDAGTooLarge error = httpkit.Error(http.StatusRequestEntityTooLarge, errors.New("dag too large"))
	// ErrTooManyRequests marks a request over a rate limit (purges of a
	// name); the client should retry after the Retry-After it is sent.
	ErrTooManyRequests error = httpkit.Error(http.StatusTooManyRequests, errors.New("too many requests"))
	// ErrUnavailable marks a DAG the origin cannot serve whole right now
	// (a striped segment below k healthy shards); the client should retry.
	ErrUnavailable error = httpkit.Error(http.StatusServiceUnavailable, errors.New("unavailable"))
)

// errorf builds an error of the given kind, one of the sentinels above,
// with a message for the client; it is answered with the kind's status.
func errorf(kind error, format string, args ...any) error {
	err := httpkit.Errorf(httpkit.StatusOf(kind), format, args...)
	err.Kind = kind
	return err
}

// retryLater is an error answered with a Retry-After header: the client
// may try again after that long (Origin.fail sets it).
type retryLater struct {
	error
	after time.Duration
}

func (e *retryLater) Unwrap() error { return e.error }

// reasonOf names err's kind for a metric label: the sentinel's text in
// snake case ("payment_required"), "too_large" for a body over its limit,
// "canceled" or "timeout" for a request that ended, "internal" otherwise.
func reasonOf(err error) string {
	var se *httpkit.StatusError
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		kind := se.Message // a sentinel itself
		if se.Kind != nil {
			kind = se.Kind.Error()
		}
		return strings.ToLower(strings.ReplaceAll(kind, " ", "_"))
	case errors.As(err, &maxBytes):
		return "too_large"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "internal"
	}
}
