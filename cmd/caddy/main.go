// Command caddy is a stock Caddy with topcdn's edge handler added, the
// plain-go-build equivalent of
//
//	xcaddy build --with github.com/topcdn/topcdn/caddymodule
//
// Run it as any Caddy: caddy run --config Caddyfile, with GOMEMLIMIT set
// to 90% of the memory_cache budgets (and GOGC=off), which `topcdn edge`
// sets by itself (see package caddymodule).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/topcdn/topcdn/caddymodule"
)

func main() {
	caddycmd.Main()
}
