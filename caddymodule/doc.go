// Package caddymodule registers topcdn's edge as the Caddy v2 HTTP handler
// http.handlers.topcdn and the Caddyfile directive topcdn (ordered before
// file_server). It is a thin adapter: the serving logic is package edge.
//
// Build a Caddy with it as with any plugin (xcaddy build --with
// github.com/topcdn/topcdn/caddymodule), or use `topcdn edge`, which embeds
// Caddy with its standard modules and this one.
package caddymodule
