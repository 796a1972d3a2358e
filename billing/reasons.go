package billing

import (
	"errors"
	"fmt"

	"github.com/topcdn/topcdn/billingapi"
)

// RejectError is a refusal with its reason.
type RejectError struct {
	Reason billingapi.Reason
	Err    error
}

// Error returns the reason and what was refused.
func (e *RejectError) Error() string { return fmt.Sprintf("billing: %s: %v", e.Reason, e.Err) }

// Unwrap returns the underlying error.
func (e *RejectError) Unwrap() error { return e.Err }

func reject(r billingapi.Reason, format string, args ...any) error {
	return &RejectError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// reasonOf returns the reason of a refusal, or "" for other errors.
func reasonOf(err error) billingapi.Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}
