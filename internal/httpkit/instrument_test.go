package httpkit

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func newTestMetrics(t *testing.T) (Metrics, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	m := Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total", Help: "h"}, []string{"route", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duration_seconds", Help: "h"}, []string{"route"}),
		Log:      zap.New(core),
	}
	return m, logs
}

func TestInstrument(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		code    string
		logged  string // the error logged, or "" for no log line
	}{
		{"implicit 200", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }, "200", ""},
		{"created", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, http.StatusCreated, 1) }, "201", ""},
		{"refused", func(w http.ResponseWriter, r *http.Request) {
			WriteError(w, Errorf(http.StatusForbidden, "wrong peer"))
		}, "403", "wrong peer"},
		{"failed", func(w http.ResponseWriter, r *http.Request) { WriteError(w, errors.New("disk full")) }, "500", "disk full"},
		{"refused without WriteError", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "gone", http.StatusGone)
		}, "410", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, logs := newTestMetrics(t)
			h := m.Instrument("put", tc.handler)
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPut, "/shards/x", nil))
			if got := testutil.ToFloat64(m.Requests.WithLabelValues("put", tc.code)); got != 1 {
				t.Errorf("requests_total{route=put,code=%s} = %v, want 1", tc.code, got)
			}
			if got := testutil.CollectAndCount(m.Requests); got != 1 {
				t.Errorf("%d request series, want 1", got)
			}
			if got := testutil.CollectAndCount(m.Duration); got != 1 {
				t.Errorf("%d duration series, want 1", got)
			}
			entries := logs.All()
			if tc.code[0] < '4' {
				if len(entries) != 0 {
					t.Errorf("logged %d lines for a %s", len(entries), tc.code)
				}
				return
			}
			if len(entries) != 1 || entries[0].Message != "request refused" {
				t.Fatalf("log lines %v, want one \"request refused\"", entries)
			}
			fields := entries[0].ContextMap()
			if fields["route"] != "put" || fields["path"] != "/shards/x" || fields["error"] != tc.logged {
				t.Errorf("log fields %v, want route put, path /shards/x, error %q", fields, tc.logged)
			}
		})
	}
}

func TestInstrumentOptionalMetrics(t *testing.T) {
	// Billing counts requests but neither times nor logs them.
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total", Help: "h"}, []string{"route", "code"})
	h := Metrics{Requests: requests}.Instrument("settle", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, Errorf(http.StatusConflict, "replay"))
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/v1/settle", nil))
	if got := testutil.ToFloat64(requests.WithLabelValues("settle", "409")); got != 1 {
		t.Errorf("requests_total{route=settle,code=409} = %v, want 1", got)
	}
	Metrics{}.Instrument("none", http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
}

func TestInstrumentResponseController(t *testing.T) {
	// A handler reaches the server's writer through the statusWriter, e.g.
	// to flush or to set a deadline.
	m, _ := newTestMetrics(t)
	flushed := false
	h := m.Instrument("get", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("part"))
		flushed = http.NewResponseController(w).Flush() == nil
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if !flushed || !w.Flushed {
		t.Error("Flush through the instrumented writer failed")
	}
}
