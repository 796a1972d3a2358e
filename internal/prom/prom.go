// Package prom declares topcdn's Prometheus metrics in one shape: every
// metric is named topcdn_<subsystem>_<name>, as CoreDNS names its own
// coredns_<plugin>_<name>, and a service registers them on the registry it
// was given, never on a global one.
package prom

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/topcdn/topcdn/internal/buildinfo"
)

// Namespace is the first part of every topcdn metric's name.
const Namespace = "topcdn"

// Counter returns the counter topcdn_<sub>_<name>.
func Counter(sub, name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help})
}

// CounterVec returns the counter topcdn_<sub>_<name> with labels.
func CounterVec(sub, name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help}, labels)
}

// Gauge returns the gauge topcdn_<sub>_<name>.
func Gauge(sub, name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help})
}

// GaugeVec returns the gauge topcdn_<sub>_<name> with labels.
func GaugeVec(sub, name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help}, labels)
}

// Histogram returns the histogram topcdn_<sub>_<name> with buckets (nil:
// Prometheus' default buckets).
func Histogram(sub, name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help, Buckets: buckets})
}

// HistogramVec returns the histogram topcdn_<sub>_<name> with buckets and
// labels.
func HistogramVec(sub, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help, Buckets: buckets}, labels)
}

// Register registers every collector on reg, stopping at the first error.
// A nil reg registers nothing.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// BuildInfo returns the gauge topcdn_build_info, always 1, labelled with
// the running binary's version, revision and Go version.
func BuildInfo() prometheus.Collector {
	bi := buildinfo.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help:        "The running build of topcdn: always 1, labelled with its version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Revision, "goversion": bi.GoVersion}})
	g.Set(1)
	return g
}

// NewRegistry returns the registry a topcdn role serves at /metrics: the
// Go runtime's and the process's collectors and topcdn_build_info, as
// Caddy serves them for the edges; each role adds its own metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), BuildInfo())
	return reg
}
