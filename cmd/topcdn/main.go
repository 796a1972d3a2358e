// Command topcdn runs every role of the topcdn decentralized CDN: the
// origin, the publisher, and (in later versions) storage peers, edges, the
// DNS router and billing.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
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
from a verified origin over the IPFS Trustless Gateway API.

Every party (publisher, origin, storage peer, edge) has an ed25519 key in the
libp2p format; its peer ID is its identity. Create one with 'topcdn keygen'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newKeygenCmd(), newOriginCmd(), newPublishCmd(), newEdgeCmd(), newStorageCmd(),
		newDNSCmd(), newBillingCmd(), newDevnetCmd())
	return root
}
