package main

import (
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/devnet"
)

func newDevnetCmd() *cobra.Command {
	var cfg devnet.Config
	cmd := &cobra.Command{
		Use:   "devnet --dir DIR",
		Short: "Run a whole topcdn network on loopback, each role its own process",
		Long: `devnet starts an origin, storage peers, billing, the DNS router, an ACME
CA (pebble, found next to this binary: make build builds bin/pebble) and three
edges (on 127.1.0.1, 127.2.0.1 and 127.3.0.1, which the router's geo database
places in Frankfurt, Tokyo and São Paulo), each as a child process of this
binary, publishes a site, funds the publisher, and writes DIR/devnet.json with
every endpoint, peer ID and pid once everything is healthy and every edge
serves HTTPS with certificates of its own from the CA (whose root,
DIR/ca/root.pem, is new at every start). Logs go to DIR/logs. Ctrl-C stops
everything; running again on the same DIR keeps keys, published content and
balances.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Out = cmd.OutOrStdout()
			return devnet.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "dir", "", "directory for keys, data, logs and devnet.json (required)")
	f.StringVar(&cfg.Site, "site", devnet.DefaultSite, "directory to publish")
	f.StringVar(&cfg.SiteName, "name", devnet.DefaultSiteName, "name to publish it under")
	f.StringVar(&cfg.Zone, "zone", devnet.DefaultZone, "DNS zone sites live under")
	f.IntVar(&cfg.Peers, "peers", devnet.DefaultPeers, "storage peers to run")
	f.BoolVar(&cfg.NoNameStream, "no-name-stream", false, "run the edges with name_stream off (names change only as their TTLs run out)")
	f.IntVar(&cfg.PortOffset, "port-offset", 0, "add this to every port (origin 7070, billing 7080, DNS 5300/8053, resolver 5301, CA 14000/15000, storage 7101…, edges 8080/8443)")
	f.StringVar(&cfg.Pebble, "pebble", "", "the pebble binary run as the CA (default: pebble next to this binary, else on PATH)")
	f.DurationVar(&cfg.CertLifetime, "cert-lifetime", devnet.DefaultCertLifetime, "how long the CA's certificates are valid")
	f.BoolVar(&cfg.NoHTTPSRedirect, "no-https-redirect", false, "edges serve names over plain HTTP too instead of redirecting to HTTPS")
	f.DurationVar(&cfg.Epoch, "epoch", devnet.DefaultEpoch, "billing epoch")
	f.Int64Var(&cfg.Deposit, "deposit", devnet.DefaultDeposit, "publisher funds deposited on the first start")
	cmd.MarkFlagRequired("dir")
	return cmd
}
