package httpkit

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Metrics are what Metrics.Instrument records requests into. The service
// registers the collectors itself, under its own names.
type Metrics struct {
	// Requests counts answered requests; its labels are route and code
	// (the status). Nil counts none.
	Requests *prometheus.CounterVec
	// Duration observes each request's latency in seconds; its label is
	// route. Nil observes none.
	Duration *prometheus.HistogramVec
	// Log, if set, gets an Info line "request refused" for every answer
	// of 400 or more, with the route, path, status and the error
	// WriteError answered with.
	Log *zap.Logger
}

// Instrument returns h recorded under route: counted by status, timed
// and, if refused, logged.
func (m Metrics) Instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		if m.Requests != nil {
			m.Requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		}
		if m.Duration != nil {
			m.Duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}
		if m.Log != nil && sw.code >= 400 {
			m.Log.Info("request refused", zap.String("route", route), zap.String("path", r.URL.Path),
				zap.Int("status", sw.code), zap.String("error", sw.errMsg))
		}
	})
}

// statusWriter remembers the status written through it and the error
// WriteError answered with.
type statusWriter struct {
	http.ResponseWriter
	code   int
	errMsg string
}

// WriteHeader records code and writes it.
func (sw *statusWriter) WriteHeader(code int) {
	sw.code = code
	sw.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// noteError records err on the statusWriter w is or wraps, if any, for
// Instrument's log line.
func noteError(w http.ResponseWriter, err error) {
	for {
		switch x := w.(type) {
		case *statusWriter:
			x.errMsg = err.Error()
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

var _ http.ResponseWriter = (*statusWriter)(nil)

// Router returns a function that mounts h on mux at pattern, instrumented
// under route (see Instrument): a service's route table is then one call
// per route.
func (m Metrics) Router(mux *http.ServeMux) func(pattern, route string, h http.HandlerFunc) {
	return func(pattern, route string, h http.HandlerFunc) {
		mux.Handle(pattern, m.Instrument(route, h))
	}
}
