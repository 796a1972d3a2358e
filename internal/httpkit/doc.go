// Package httpkit is topcdn's HTTP plumbing, written once for every
// service: errors that carry the status they are answered with
// (StatusError, StatusOf), JSON answers (WriteJSON, WriteError), handlers
// that count, time and log their requests into metrics the service
// registers (Metrics.Instrument), and clients that read a size-limited
// answer (Do, DoJSON, Get, GetJSON, ResponseError).
//
// Like caddyhttp.Error and CoreDNS's plugin/pkg packages, it holds no
// state of its own: metrics, loggers and HTTP clients come from the
// caller.
package httpkit
