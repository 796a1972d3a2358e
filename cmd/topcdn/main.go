// Command topcdn runs every role of the topcdn decentralized CDN, each a
// subcommand: the publisher's client (keygen, publish, sites, purge), the origin,
// storage peers, edges (Caddy embedded), the DNS router, billing, and a
// devnet that runs them all on loopback. The subcommands only parse flags
// and wire the packages together; README.md describes each.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "topcdn:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "topcdn",
		Short: "A decentralized, content-addressed CDN",
		Long: `topcdn publishes static sites as content-addressed IPFS DAGs and serves them
from edges that read every block from storage peers (or the origin) and
verify it against its CID, steered to by a geo-DNS router, with billing
paying operators for what they served.

Every party (publisher, origin, storage peer, edge, DNS router, billing) has
an ed25519 key in the libp2p format; its peer ID is its identity. Create one
with 'topcdn keygen'.`,
		Version:       buildinfo.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("topcdn {{.Version}}\n")
	root.AddCommand(newKeygenCmd(), newOriginCmd(), newPublishCmd(), newEdgeCmd(), newStorageCmd(),
		newDNSCmd(), newBillingCmd(), newDevnetCmd(), newPurgeCmd(), newSitesCmd())
	return root
}
