package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors, each with its HTTP meaning in statusOf. A *PeerError
// from a Client matches the sentinel of its status code with errors.Is.
var (
	// ErrBadRequest marks malformed input: a bad shard ID, Range header,
	// body or order field.
	ErrBadRequest = errors.New("bad request")
	// ErrForbidden marks a request without a valid order for it: missing,
	// badly signed, signed by the wrong key, for another peer or shard, or
	// expired.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound marks a shard the peer does not hold.
	ErrNotFound = errors.New("shard not found")
	// ErrConflict marks a read order that was already served.
	ErrConflict = errors.New("conflict")
	// ErrLengthRequired marks a shard upload without a Content-Length.
	ErrLengthRequired = errors.New("length required")
	// ErrTooLarge marks a request body or header over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrRangeNotSatisfiable marks a range outside the shard.
	ErrRangeNotSatisfiable = errors.New("range not satisfiable")
	// ErrInsufficientStorage marks a shard larger than the peer's free
	// capacity.
	ErrInsufficientStorage = errors.New("insufficient storage")

	// ErrBadAnswer marks a peer's answer that came back but is wrong: a
	// short or long body, a malformed or unproven audit answer. Unlike a
	// transport error, it is the peer's fault.
	ErrBadAnswer = errors.New("peer answered wrongly")

	// errMethodNotAllowed marks a HEAD of a shard, which would spend a
	// read order for nothing.
	errMethodNotAllowed = errors.New("method not allowed")
)

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
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrLengthRequired):
		return http.StatusLengthRequired
	case errors.Is(err, ErrTooLarge), errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrRangeNotSatisfiable):
		return http.StatusRequestedRangeNotSatisfiable
	case errors.Is(err, ErrInsufficientStorage):
		return http.StatusInsufficientStorage
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // client closed request
	default:
		return http.StatusInternalServerError
	}
}

// kindOf is statusOf's inverse, for errors.Is on a PeerError.
func kindOf(status int) error {
	switch status {
	case http.StatusBadRequest:
		return ErrBadRequest
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case http.StatusLengthRequired:
		return ErrLengthRequired
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusRequestedRangeNotSatisfiable:
		return ErrRangeNotSatisfiable
	case http.StatusInsufficientStorage:
		return ErrInsufficientStorage
	default:
		return nil
	}
}

// PeerError is an error answer from a storage peer.
type PeerError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the peer's explanation.
	Message string
}

// Error returns the status and the peer's message.
func (e *PeerError) Error() string {
	return fmt.Sprintf("storage peer refused (HTTP %d %s): %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Is reports whether target is the sentinel of e's status code, e.g.
// ErrInsufficientStorage for 507 or ErrNotFound for 404.
func (e *PeerError) Is(target error) bool {
	k := kindOf(e.Status)
	return k != nil && k == target
}

// writeError answers with err's status and a JSON ErrorResponse.
func writeError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		msg = "internal error: " + msg
	}
	writeJSON(w, code, ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// snippet returns b as text for an error message, trimmed and cut short.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

var _ error = (*PeerError)(nil)
