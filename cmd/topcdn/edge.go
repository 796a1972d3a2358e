package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the Caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"      // Caddy's standard modules (encode, file_server, …)
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/caddymodule" // http.handlers.topcdn and the topcdn directive
)

func newEdgeCmd() *cobra.Command {
	var config, adapter string
	cmd := &cobra.Command{
		Use:   "edge [--config Caddyfile]",
		Short: "Run an edge: Caddy with the topcdn handler",
		Long: `edge runs Caddy, embedded, with its standard modules and topcdn's handler
(http.handlers.topcdn, Caddyfile directive 'topcdn'), from a Caddyfile or a
JSON config. An edge serves published sites by host name (NAME.cdn.test),
the path gateway (/ipfs/{cid}/..., /ipns/{name}/...) and the subdomain
gateway ({cid}.ipfs.cdn.test), from blocks it fetches from storage peers or
the origin and verifies against their CIDs, cached in memory and on disk.

Once the config is loaded, the Go memory limit is set to 90% of the sum of
its topcdn handlers' memory_cache budgets (at least 96 MiB) and GOGC is
turned off, so the limit alone paces the garbage collector (GOMEMLIMIT, when
set, wins; GOGC, when set, is kept). A config loaded later through Caddy's
admin API keeps that limit.

A minimal Caddyfile:

  {
      auto_https off
      servers {
          listener_wrappers {
              topcdn_limit {
                  per_address 256
                  total       16384
              }
              tls
          }
          timeouts {
              read_header 10s
              idle        2m
          }
      }
  }
  :8080 {
      encode zstd gzip
      topcdn {
          origin       http://127.0.0.1:8081
          domain       cdn.test
          memory_cache 256MiB
          disk_cache   /var/cache/topcdn 1GiB
          key          /var/lib/topcdn/edge.key
      }
  }

topcdn_limit closes a client address's connections over per_address, and
any over total, as soon as they are accepted; with read_header it keeps a
client that opens connections and sends nothing (slowloris) from taking
the edge's file descriptors. Without key, the edge keeps its key in
Caddy's data directory (topcdn/edge.key under $XDG_DATA_HOME/caddy or
~/.local/share/caddy), created at the first start.

SIGINT or SIGTERM stop it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := os.ReadFile(config)
			if err != nil {
				return fmt.Errorf("edge: %w", err)
			}
			cfgJSON := body
			if adapter != "json" {
				a := caddyconfig.GetAdapter(adapter)
				if a == nil {
					return fmt.Errorf("edge: no config adapter %q", adapter)
				}
				var warnings []caddyconfig.Warning
				if cfgJSON, warnings, err = a.Adapt(body, map[string]any{"filename": config}); err != nil {
					return fmt.Errorf("edge: %s: %w", config, err)
				}
				for _, w := range warnings {
					fmt.Fprintf(cmd.ErrOrStderr(), "edge: %s:%d: %s\n", w.File, w.Line, w.Message)
				}
			}
			if err := caddy.Load(cfgJSON, true); err != nil {
				return fmt.Errorf("edge: %w", err)
			}
			budget, err := caddymodule.MemoryBudget(cfgJSON)
			if err != nil {
				return fmt.Errorf("edge: %w", err)
			}
			if limit := setMemoryLimit(budget); limit > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "edge: Go memory limit %d MiB, 90%% of the memory_cache budgets (GOMEMLIMIT overrides)\n", limit>>20)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "edge running with %s\n", config)
			<-cmd.Context().Done()
			if err := caddy.Stop(); err != nil && !errors.Is(err, caddy.ErrNotConfigured) {
				return fmt.Errorf("edge: stop: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&config, "config", "Caddyfile", "Caddyfile (or JSON config with --adapter json)")
	cmd.Flags().StringVar(&adapter, "adapter", "caddyfile", "config adapter: caddyfile or json")
	return cmd
}
