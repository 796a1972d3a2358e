package caddymodule

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the Caddyfile adapter
	"github.com/topcdn/topcdn/edge"
)

// TestMemoryBudget: the budget of a config is the sum of its topcdn
// handlers' memory_cache, the default for those without one, wherever
// the handlers are; a config without one has none.
func TestMemoryBudget(t *testing.T) {
	tests := []struct {
		name      string
		caddyfile string
		want      int64
	}{
		{name: "one handler", caddyfile: ":8080 {\n topcdn http://o {\n  memory_cache 64MiB\n }\n}\n", want: 64 << 20},
		{name: "the default", caddyfile: ":8080 {\n topcdn http://o\n}\n", want: edge.DefaultMemoryBytes},
		{name: "two sites, one in a handle block", caddyfile: ":8080 {\n topcdn http://o {\n  memory_cache 1MiB\n }\n}\n" +
			":8081 {\n handle /x/* {\n  topcdn http://o {\n   memory_cache 2MiB\n  }\n }\n}\n", want: 3 << 20},
		{name: "no topcdn handler", caddyfile: ":8080 {\n respond \"hi\"\n}\n", want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tc.caddyfile), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := MemoryBudget(cfg)
			if err != nil || got != tc.want {
				t.Fatalf("MemoryBudget = %d, %v; want %d\nconfig: %s", got, err, tc.want, cfg)
			}
		})
	}
	if _, err := MemoryBudget([]byte("{")); err == nil {
		t.Fatal("a config that is not JSON has a budget")
	}
}
