package billing

import (
	"errors"
	"fmt"

	"github.com/topcdn/topcdn/billingapi"
)

// RejectError is a refusal with its reason. It is declared in billingapi
// so that the parties billing asks for evidence can refuse a claim
// without importing the ledger.
type RejectError = billingapi.RejectError

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
