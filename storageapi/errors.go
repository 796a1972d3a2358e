package storageapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors, each with its HTTP meaning as the peer answers it (see PeerError). A *PeerError
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
)

// kind pairs a sentinel with the HTTP status a peer answers it with.
type kind struct {
	status int
	err    error
}

// kinds lists the sentinels that have a status of their own: the one
// table behind KindStatus (the peer's side) and kindOf (the client's).
func kinds() []kind {
	return []kind{
		{http.StatusBadRequest, ErrBadRequest},
		{http.StatusForbidden, ErrForbidden},
		{http.StatusNotFound, ErrNotFound},
		{http.StatusConflict, ErrConflict},
		{http.StatusLengthRequired, ErrLengthRequired},
		{http.StatusRequestEntityTooLarge, ErrTooLarge},
		{http.StatusRequestedRangeNotSatisfiable, ErrRangeNotSatisfiable},
		{http.StatusInsufficientStorage, ErrInsufficientStorage},
	}
}

// KindStatus returns the HTTP status a peer answers an error of kind with
// (ErrNotFound: 404, ...), or 0 if kind is not one of the sentinels above
// or is ErrBadAnswer, which no peer sends.
func KindStatus(kind error) int {
	for _, k := range kinds() {
		if k.err == kind {
			return k.status
		}
	}
	return 0
}

// kindOf maps an HTTP status back to its sentinel, for errors.Is on a
// PeerError, or nil.
func kindOf(status int) error {
	for _, k := range kinds() {
		if k.status == status {
			return k.err
		}
	}
	return nil
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

// snippet returns b as text for an error message, trimmed and cut short.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

var _ error = (*PeerError)(nil)
