package httpkit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// StatusClientClosedRequest is the status StatusOf gives a request whose
// client went away (context.Canceled), as nginx logs it. It is never seen
// by that client.
const StatusClientClosedRequest = 499

// StatusError is an error answered with an HTTP status. Its Error is the
// message for the client; it wraps its cause, so errors.Is and errors.As
// see through it.
type StatusError struct {
	// Status is the HTTP status code to answer with.
	Status int
	// Message is what Error returns: the explanation for the client.
	Message string
	// Kind, if set, is a sentinel error of the service (ErrBadRequest,
	// ...) that errors.Is matches the StatusError with.
	Kind error
	// Reason, if set, labels the error in the service's metrics, e.g. why
	// an order was refused. It is not sent to the client.
	Reason string
	// Err is the cause, or nil.
	Err error
}

// Error returns the message for the client.
func (e *StatusError) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *StatusError) Unwrap() error { return e.Err }

// Is reports whether target is e's Kind.
func (e *StatusError) Is(target error) bool { return e.Kind != nil && target == e.Kind }

// Error returns an error answered with status whose message is err's and
// which wraps err. A nil err gives the status's text as the message.
func Error(status int, err error) *StatusError {
	if err == nil {
		return &StatusError{Status: status, Message: http.StatusText(status)}
	}
	return &StatusError{Status: status, Message: err.Error(), Err: err}
}

// Errorf returns an error answered with status, with the message format
// and args give as fmt.Errorf would; a %w verb wraps its argument.
func Errorf(status int, format string, args ...any) *StatusError {
	err := fmt.Errorf(format, args...)
	e := &StatusError{Status: status, Message: err.Error()}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		e.Err = u.Unwrap()
	case interface{ Unwrap() []error }:
		e.Err = err // several %w: keep them all
	}
	return e
}

// StatusOf maps err to the HTTP status it is answered with: a
// *StatusError's (the outermost one), 413 for a body over an
// http.MaxBytesReader's limit, 504 for context.DeadlineExceeded, 499
// (StatusClientClosedRequest) for context.Canceled, and 500 for anything
// else. A nil err is 200.
func StatusOf(err error) int {
	var se *StatusError
	var maxBytes *http.MaxBytesError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &se) && se.Status >= 100 && se.Status <= 999:
		return se.Status
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return StatusClientClosedRequest
	default:
		return http.StatusInternalServerError
	}
}

var _ error = (*StatusError)(nil)
