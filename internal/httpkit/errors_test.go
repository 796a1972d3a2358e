package httpkit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

var errKind = errors.New("kind")

func TestStatusOf(t *testing.T) {
	kinded := Errorf(http.StatusConflict, "taken")
	kinded.Kind = errKind
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, http.StatusOK},
		{"status error", Errorf(http.StatusNotFound, "no such shard"), http.StatusNotFound},
		{"wrapped status error", fmt.Errorf("get: %w", Error(http.StatusForbidden, errors.New("bad signature"))), http.StatusForbidden},
		{"outermost status wins", Errorf(http.StatusBadRequest, "bad: %w", Errorf(http.StatusNotFound, "gone")), http.StatusBadRequest},
		{"status over a timeout", Errorf(http.StatusServiceUnavailable, "busy: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{"kinded", kinded, http.StatusConflict},
		{"max bytes", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 10}), http.StatusRequestEntityTooLarge},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{"canceled", fmt.Errorf("query: %w", context.Canceled), StatusClientClosedRequest},
		{"other", errors.New("disk on fire"), http.StatusInternalServerError},
		{"invalid status", Errorf(0, "no status"), http.StatusInternalServerError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := StatusOf(tc.err); got != tc.want {
				t.Errorf("StatusOf(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestStatusErrorChain(t *testing.T) {
	cause := errors.New("cause")
	other := errors.New("other")
	kinded := Errorf(http.StatusConflict, "order %d: %w", 7, cause)
	kinded.Kind = errKind
	tests := []struct {
		name    string
		err     *StatusError
		message string
		is      []error
		isNot   []error
	}{
		{"Error", Error(http.StatusBadGateway, cause), "cause", []error{cause}, []error{other, errKind}},
		{"Error nil", Error(http.StatusTeapot, nil), "I'm a teapot", nil, []error{cause}},
		{"Errorf without %w", Errorf(http.StatusBadRequest, "cids[%d]: %v", 3, cause), "cids[3]: cause", nil, []error{cause}},
		{"Errorf with %w", Errorf(http.StatusBadRequest, "cids[%d]: %w", 3, cause), "cids[3]: cause", []error{cause}, []error{other}},
		{"Errorf with two %w", Errorf(http.StatusBadRequest, "%w and %w", cause, other), "cause and other", []error{cause, other}, []error{errKind}},
		{"Kind", kinded, "order 7: cause", []error{cause, errKind}, []error{other}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.message {
				t.Errorf("Error() = %q, want %q", got, tc.message)
			}
			wrapped := fmt.Errorf("outer: %w", tc.err)
			for _, target := range tc.is {
				if !errors.Is(wrapped, target) {
					t.Errorf("errors.Is(%v, %v) = false, want true", wrapped, target)
				}
			}
			for _, target := range tc.isNot {
				if errors.Is(wrapped, target) {
					t.Errorf("errors.Is(%v, %v) = true, want false", wrapped, target)
				}
			}
			var se *StatusError
			if !errors.As(wrapped, &se) || se != tc.err {
				t.Errorf("errors.As did not find the *StatusError")
			}
		})
	}
}
