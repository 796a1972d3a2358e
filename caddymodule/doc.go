// Package caddymodule registers topcdn's edge as the Caddy v2 HTTP handler
// http.handlers.topcdn and the Caddyfile directive topcdn (ordered before
// file_server). It is a thin adapter: the serving logic is package edge.
//
// Provision only checks: Caddy provisions a config to validate it too
// (caddy validate), so what writes or connects (the key file, the disk
// cache, heartbeats, billing reports) waits for the app topcdn, which the
// handlers load, to start, or for the first request. Handlers of a config
// configured alike share one running edge.
//
// It also registers the listener wrapper caddy.listeners.topcdn_limit
// (ConnLimit), which caps the connections a server holds per client
// address and in total: with a header read timeout (servers { timeouts {
// read_header 10s } }), what keeps a slowloris client from taking all the
// edge's file descriptors. The repository's Caddyfile uses both.
//
// And it registers the DNS provider dns.providers.topcdn (DNSProvider),
// with which Caddy's ACME issuer solves DNS-01 challenges through the
// topcdn DNS router: each edge obtains its own certificates for the zone's
// wildcards, signing each challenge record with its edge key
// (tls { dns topcdn { router URL } }).
//
// Build a Caddy with it as with any plugin (xcaddy build --with
// github.com/topcdn/topcdn/caddymodule, or go build ./cmd/caddy), or use
// `topcdn edge`, which embeds Caddy with its standard modules and this one.
//
// A module sets nothing process-wide, so the memory limit an edge relies
// on is the program's to set: memory_cache is the edge's whole memory
// budget, and without a Go memory limit near it the heap grows to twice the
// live caches before a collection. `topcdn edge` sets the limit to 90% of
// the sum of the config's budgets (MemoryBudget; at least 96 MiB) and
// turns GOGC off. A stock Caddy build does not (its main sets the limit
// from the cgroup or the machine's memory): run it with GOMEMLIMIT set to
// 90% of the budgets, and GOGC=off for the same pacing, e.g.
//
//	GOMEMLIMIT=230MiB GOGC=off caddy run --config Caddyfile   # memory_cache 256MiB
package caddymodule
