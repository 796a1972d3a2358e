package httpkit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWriteJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, http.StatusCreated, map[string]any{"peer_id": "12D3", "shards": 2})
	if w.Code != http.StatusCreated {
		t.Errorf("status %d, want 201", w.Code)
	}
	for k, want := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"} {
		if got := w.Header().Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// Indented by two spaces, one value a line, as the services always
	// answered.
	if want := "{\n  \"peer_id\": \"12D3\",\n  \"shards\": 2\n}\n"; w.Body.String() != want {
		t.Errorf("body %q, want %q", w.Body.String(), want)
	}
}

func TestWriteError(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		body   string
	}{
		{"client error", Errorf(http.StatusNotFound, "no name %q", "blog"), http.StatusNotFound,
			"{\n  \"error\": \"no name \\\"blog\\\"\"\n}\n"},
		{"wrapped client error", fmt.Errorf("lookup: %w", Errorf(http.StatusForbidden, "signer")), http.StatusForbidden,
			"{\n  \"error\": \"lookup: signer\"\n}\n"},
		{"internal", errors.New("database is locked"), http.StatusInternalServerError,
			"{\n  \"error\": \"internal error: database is locked\"\n}\n"},
		{"internal status error", Errorf(http.StatusInternalServerError, "boom"), http.StatusInternalServerError,
			"{\n  \"error\": \"internal error: boom\"\n}\n"},
		{"unavailable", Errorf(http.StatusServiceUnavailable, "busy"), http.StatusServiceUnavailable,
			"{\n  \"error\": \"busy\"\n}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			WriteError(w, tc.err)
			if w.Code != tc.status {
				t.Errorf("status %d, want %d", w.Code, tc.status)
			}
			if w.Body.String() != tc.body {
				t.Errorf("body %q, want %q", w.Body.String(), tc.body)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
		})
	}
}

// TestHealth: 200 with the fields and status ok while the ping succeeds;
// the ping's error, with its status, when it fails.
func TestHealth(t *testing.T) {
	var down error
	h := Health(func(context.Context) error { return down }, map[string]string{"peer_id": "12D3"})
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"status": "ok"`) || !strings.Contains(rec.Body.String(), `"peer_id": "12D3"`) {
		t.Fatalf("up: %d %s", rec.Code, rec.Body)
	}
	down = Error(http.StatusServiceUnavailable, errors.New("database gone"))
	rec = httptest.NewRecorder()
	h(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "database gone") {
		t.Fatalf("down: %d %s", rec.Code, rec.Body)
	}
}
