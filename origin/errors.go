package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/originapi"
)

// Sentinel errors, each with its HTTP meaning in statusOf.
var (
	// ErrBadRequest marks malformed input: a bad CID, CAR, record or name.
	ErrBadRequest = errors.New("bad request")
	// ErrTooLarge marks input over a size limit.
	ErrTooLarge = errors.New("too large")
	// ErrConflict marks a rolled-back record or a name owned by another key.
	ErrConflict = errors.New("conflict")
	// ErrIncomplete marks an upload or record whose DAG is not all at the
	// origin.
	ErrIncomplete = errors.New("incomplete DAG")
	// ErrNotFound marks an unknown name.
	ErrNotFound = errors.New("not found")
	// ErrForbidden marks a request the caller may not make: a signature
	// that does not verify, a key not allowed, a CAR other than the one
	// signed for.
	ErrForbidden = errors.New("forbidden")
	// ErrUnauthorized marks a request that lacks a usable signed
	// authorization: none, malformed, or outside its time window.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrOverQuota marks an upload that would take its publisher over its
	// byte quota.
	ErrOverQuota = errors.New("over quota")
	// ErrPaymentRequired marks an upload of a publisher who cannot pay
	// (Config.Funds).
	ErrPaymentRequired = errors.New("payment required")
	// ErrBusy marks a request refused for load; the client should retry.
	ErrBusy = errors.New("busy")
)

// statusError ties an error to the HTTP status it should be answered with.
type statusError struct {
	kind error // one of the sentinels above
	msg  string
}

func (e *statusError) Error() string        { return e.msg }
func (e *statusError) Is(target error) bool { return target == e.kind }

// errorf builds an error of the given kind with a message for the client.
func errorf(kind error, format string, args ...any) error {
	return &statusError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status code, the storage side's
// (durability) included.
func statusOf(err error) int {
	var maxBytes *http.MaxBytesError
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, durability.ErrBadHeartbeat):
		return http.StatusBadRequest
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrOverQuota), errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrConflict), errors.Is(err, durability.ErrReplayedHeartbeat):
		return http.StatusConflict
	case errors.Is(err, ErrIncomplete):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrNotFound), errors.Is(err, durability.ErrNoManifest):
		return http.StatusNotFound
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrPaymentRequired):
		return http.StatusPaymentRequired
	case errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // client closed request
	default:
		return http.StatusInternalServerError
	}
}

// reasonOf names err's kind for a metric label: the sentinel's text in
// snake case ("payment_required"), "too_large" for a body over its limit,
// "canceled" or "timeout" for a request that ended, "internal" otherwise.
func reasonOf(err error) string {
	var se *statusError
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		return strings.ToLower(strings.ReplaceAll(se.kind.Error(), " ", "_"))
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

// writeError answers with err's status and a JSON ErrorResponse.
func writeError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		msg = "internal error: " + msg
	}
	writeJSON(w, code, originapi.ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
