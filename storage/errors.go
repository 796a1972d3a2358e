package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/topcdn/topcdn/storageapi"
)

// errMethodNotAllowed marks a HEAD of a shard, which would spend a read
// order for nothing.
var errMethodNotAllowed = errors.New("method not allowed")

// statusError ties an error to the HTTP status it should be answered with
// and, for a refused order, to the reason counted in
// topcdn_storage_orders_rejected_total.
type statusError struct {
	kind   error  // one of the sentinels above
	msg    string // for the client
	reason string // order rejection reason, or ""
	cause  error  // wrapped, may be nil
}

func (e *statusError) Error() string        { return e.msg }
func (e *statusError) Is(target error) bool { return target == e.kind }
func (e *statusError) Unwrap() error        { return e.cause }

// errorf builds an error of the given kind with a message for the client.
// A %w verb in format wraps its argument.
func errorf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &statusError{kind: kind, msg: err.Error(), cause: errors.Unwrap(err)}
}

// reject is errorf for a refused order, counted under reason.
func reject(reason string, kind error, format string, args ...any) error {
	err := errorf(kind, format, args...).(*statusError)
	err.reason = reason
	return err
}

// Reasons an order is refused, the label values of
// topcdn_storage_orders_rejected_total.
const (
	reasonMissing   = "missing"   // no order header, or an empty one
	reasonMalformed = "malformed" // not a decodable envelope or body
	reasonSignature = "signature" // bad signature or wrong envelope type
	reasonSigner    = "signer"    // signed by a key that may not sign it
	reasonPeer      = "peer"      // for another peer
	reasonShard     = "shard"     // for another shard
	reasonExpired   = "expired"   // expired or valid too long
	reasonRange     = "range"     // range differs from the request's
	reasonSize      = "size"      // size differs from the upload's
	reasonReplay    = "replay"    // read order already served
)

// statusOf maps an error to its HTTP status code.
func statusOf(err error) int {
	var maxBytes *http.MaxBytesError
	switch {
	case errors.Is(err, storageapi.ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, storageapi.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, storageapi.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed
	case errors.Is(err, storageapi.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, storageapi.ErrLengthRequired):
		return http.StatusLengthRequired
	case errors.Is(err, storageapi.ErrTooLarge), errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, storageapi.ErrRangeNotSatisfiable):
		return http.StatusRequestedRangeNotSatisfiable
	case errors.Is(err, storageapi.ErrInsufficientStorage):
		return http.StatusInsufficientStorage
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // client closed request
	default:
		return http.StatusInternalServerError
	}
}

// writeError answers with err's status and a JSON ErrorResponse.
func writeError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		msg = "internal error: " + msg
	}
	writeJSON(w, code, storageapi.ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
