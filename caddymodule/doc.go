// Package caddymodule will register the Caddy v2 HTTP handler
// http.handlers.topcdn, a thin adapter over package edge.
//
// Not implemented yet: this package only reserves its place in the layout.
// The work is tracked in issue 5.
package caddymodule
