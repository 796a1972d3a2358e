package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dashboard"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/prom"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/origin/origindb"
	"go.uber.org/zap"
)

func newOriginCmd() *cobra.Command {
	var (
		cfg                       origin.Config
		stripe                    durability.StripeConfig
		dash                      dashboard.Config
		listen, keyFile, logLevel string
		billingURL                string
		chunkSize                 int64
		publishers, originSet     []string
		noStripe                  bool
	)
	cmd := &cobra.Command{
		Use:   "origin --data DIR [--listen ADDR] [--db postgres://…]",
		Short: "Run a content-addressed origin (Trustless Gateway + publish API)",
		Long: `origin stores published content and serves it: it verifies every uploaded
block against its CID before storing it (flatfs under DIR/blocks), keeps
IPNS records and human names in SQLite (DIR/origin.db), and serves the
Trustless Gateway, the publish and storage APIs and the dashboard
(/dashboard/); README.md, "The origin", lists every endpoint.

Published content is striped to storage peers ('topcdn storage'): packed
into segments, Reed-Solomon coded (--data-shards + --parity-shards, each
shard on a different peer) once enough peers send heartbeats; then the
origin drops its own copy and reads blocks back from the peers, verified.
It audits peers continuously and repairs segments whose healthy shards fall
below --repair-threshold. --no-stripe keeps everything on the origin.

Only publishers put content on the origin: every CAR upload carries an
authorization signed by the publisher's key ('topcdn publish --key' signs
it) for exactly that CAR's roots and blocks, within 5 minutes of the
origin's clock and with a nonce used once. Each publisher is charged the
bytes its uploads add (blocks the origin already holds cost nothing) and
may store up to --publisher-quota; --publisher restricts uploads to the
listed keys. With --billing, an upload is refused with 402 unless the
publisher's billing account has a positive balance ('topcdn billing
deposit' first); a publisher key linked to an account at billing has the
account's funds. Publishers learn --billing and --domain from the origin's
pre-publish check, to link their site keys and print their sites' URLs.

Several origins run over one PostgreSQL database (--db postgres://…): any
of them takes publishes and serves names, manifests and the gateway, and
background work (striping, audits, repair, the sweep) runs once across
them under leases (--lease-ttl) that move to a live origin when a holder
dies. With PostgreSQL an upload is striped before it is acknowledged, so
striping cannot be off. Each origin signs with its own key; --origin-set
lists every origin's peer ID (what storage peers, edges, the router and
billing pin) and must include this origin's. README.md, "Several
origins", says how to run them.

When it is ready it prints "listening on http://ADDR" on standard output.
SIGINT or SIGTERM stop it cleanly.`,
		Args: cobra.NoArgs,
		RunE: withLogger(&logLevel, func(cmd *cobra.Command, log *zap.Logger) error {
			var err error
			cfg.Logger, cfg.Registry = log, prom.NewRegistry()
			if cfg.OriginIDs, err = decodePeerIDs("origin-set", originSet); err != nil {
				return err
			}
			for _, s := range publishers {
				p, err := peer.Decode(s)
				if err != nil {
					return fmt.Errorf("--publisher %q: %w", s, err)
				}
				cfg.Publishers = append(cfg.Publishers, p)
			}
			if !noStripe {
				stripe.ChunkSize = int(chunkSize)
				cfg.Stripe = &stripe
			}
			if keyFile != "" {
				if cfg.Key, err = identity.Load(keyFile); err != nil {
					return err
				}
			}
			if billingURL != "" {
				cfg.Funds = billingFunds{billingapi.NewClient(billingURL, nil)}
				cfg.Billing = billingURL
			}
			return runOrigin(cmd.Context(), cmd, listen, cfg, dash, log)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8081", "address to serve HTTP on")
	f.StringVar(&cfg.DataDir, "data", "", "directory for blocks, database and key (required)")
	f.StringVar(&cfg.DB, "db", "", "metadata database: a SQLite file, or postgres://… shared by several origins (default: DIR/origin.db)")
	f.StringSliceVar(&originSet, "origin-set", nil, "peer IDs of every origin of the network, this one's included (repeatable; default: this origin's alone)")
	f.StringVar(&cfg.URL, "url", "", "this origin's base URL as clients reach it, recorded for the other origins sharing --db")
	f.DurationVar(&stripe.LeaseTTL, "lease-ttl", durability.DefaultLeaseTTL, "how long an origin's hold on a background job lasts unrenewed: a dead holder's work moves within it")
	f.StringVar(&keyFile, "key", "", "origin key file (default: DIR/origin.key, created if missing)")
	sizeVar(f, &cfg.MaxUploadSize, "max-upload", origin.DefaultMaxUploadSize, "largest CAR upload accepted")
	sizeVar(f, &cfg.PublisherQuota, "publisher-quota", origin.DefaultPublisherQuota, "bytes each publisher may store (blocks its uploads add); negative: unlimited")
	f.StringSliceVar(&publishers, "publisher", nil, "peer ID of a key allowed to upload (repeatable; default: any key, each within its quota)")
	f.StringVar(&billingURL, "billing", "", "billing's URL: uploads of publishers without funds there get 402 (default: no check); told to publishers, who link their site keys there")
	f.StringVar(&cfg.Domain, "domain", origin.DefaultDomain, "domain the edges serve sites under (NAME.DOMAIN, ROOT.ipfs.DOMAIN), told to publishers for their URLs")
	f.BoolVar(&cfg.Deserialized, "deserialized", false, "also serve files and directories to browsers, not only trustless responses")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&cfg.AllowIncomplete, "allow-incomplete", false, "accept CARs whose blocks link to blocks they lack (test fixtures; needs --no-stripe)")
	f.BoolVar(&noStripe, "no-stripe", false, "keep published content on the origin instead of striping it to storage peers")
	f.IntVar(&stripe.DataShards, "data-shards", erasure.DefaultDataShards, "data shards per segment (k): any k shards rebuild it")
	f.IntVar(&stripe.ParityShards, "parity-shards", erasure.DefaultParityShards, "parity shards per segment (m): how many lost shards a segment survives")
	sizeVar(f, &stripe.SegmentSize, "segment-size", erasure.DefaultSegmentSize, "target size of a segment")
	sizeVar(f, &chunkSize, "chunk-size", erasure.DefaultChunkSize, "size of the shard chunks whose hashes check degraded reads")
	f.BoolVar(&stripe.KeepLocal, "keep-local", false, "keep the origin's own copy of striped content")
	f.IntVar(&stripe.RepairThreshold, "repair-threshold", 0, "repair a segment with fewer healthy shards than this (default: data shards + 2)")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", durability.DefaultHeartbeatInterval, "storage peers' heartbeat interval; three missed make a peer unhealthy")
	f.DurationVar(&stripe.AuditInterval, "audit-interval", durability.DefaultAuditInterval, "pause between two audits of random shards")
	f.DurationVar(&stripe.RepairInterval, "repair-interval", durability.DefaultRepairInterval, "pause between two scans for segments to repair")
	f.DurationVar(&stripe.SweepInterval, "sweep-interval", durability.DefaultSweepInterval, "pause between two sweeps deleting orphan shards (left on peers by failed jobs)")
	f.DurationVar(&stripe.LostAfter, "lost-after", 0, fmt.Sprintf("a peer silent this long has lost its shards: repair them even above --repair-threshold (default: %d heartbeat intervals)",
		durability.DefaultLostAfterIntervals))
	f.DurationVar(&cfg.StripeWait, "stripe-wait", origin.DefaultStripeWait, "how long an upload waits for its roots to be striped onto the storage peers before it is answered (negative: answer at once)")
	f.IntVar(&cfg.MaxNameWaitersPerIP, "max-name-waiters-per-ip", origin.DefaultMaxNameWaitersPerIP, "long-polls of the name-change stream one client address may hold at once (edges and routers hold one each)")
	f.StringVar(&dash.Router, "dashboard-router", "", "the DNS router's HTTP URL, for the dashboard's edges")
	f.StringVar(&dash.Billing, "dashboard-billing", "", "the billing service's URL, for the dashboard's balances")
	cmd.MarkFlagRequired("data")
	cmd.AddCommand(newOriginRetireKeyCmd())
	return cmd
}

// newOriginRetireKeyCmd is `topcdn origin retire-key`: step two of
// rotating an origin's key.
func newOriginRetireKeyCmd() *cobra.Command {
	var dataDir, dsn, signer string
	cmd := &cobra.Command{
		Use:   "retire-key --db DSN --signer PEER_ID",
		Short: "Have the origins re-sign every manifest an origin key signed (rotating that key)",
		Long: `retire-key marks every manifest signed by --signer stale in the origins'
database; the next repair pass of an origin re-signs each with that
origin's own key, as a new version. Run it once the origins hold the new
key in their --origin-set next to the one retired, and drop the retired
key from the sets once 'SELECT count(*) FROM manifests WHERE signer = ID'
is 0. origin/README.md, "Rotating an origin's key", gives every step.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := peer.Decode(signer)
			if err != nil {
				return fmt.Errorf("--signer %q: %w", signer, err)
			}
			if dsn == "" {
				if dataDir == "" {
					return errors.New("give --db, or --data for an origin's own SQLite database")
				}
				dsn = filepath.Join(dataDir, "origin.db")
			}
			db, err := origindb.Open(cmd.Context(), dsn)
			if err != nil {
				return err
			}
			defer db.Close()
			n, err := durability.RetireSigner(cmd.Context(), db, id)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d manifests signed by %s marked for re-signing\n", n, id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dsn, "db", "", "the origins' database, postgres://… (or a SQLite file)")
	f.StringVar(&dataDir, "data", "", "an origin's data directory, for its own SQLite database (default with no --db)")
	f.StringVar(&signer, "signer", "", "peer ID of the origin key to retire (required)")
	cmd.MarkFlagRequired("signer")
	return cmd
}

func runOrigin(ctx context.Context, cmd *cobra.Command, listen string, cfg origin.Config, dash dashboard.Config, log *zap.Logger) error {
	o, err := origin.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer o.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	log.Info("origin listening", zap.String("addr", ln.Addr().String()), zap.Stringer("peer_id", o.ID().ID))
	dash.Origin = "http://" + ln.Addr().String()
	d, err := dashboard.New(dash)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", o.Handler())
	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", d.Handler()))
	return serve(ctx, cmd, "origin", ln, mux, func(ctx context.Context) {
		go d.Run(ctx)
		o.Run(ctx)
	}, log, o.EndWaits)
}

// billingFunds implements origin.Funds over billing's HTTP API: a
// publisher can pay if its account has a positive balance (an account
// billing does not know has none). A key linked to an account can pay if
// the account can: billing names the account as the key's payer.
type billingFunds struct{ c *billingapi.Client }

func (f billingFunds) CanPay(ctx context.Context, publisher peer.ID) (bool, error) {
	a, err := f.c.Account(ctx, publisher.String())
	if err == nil && a.Payer != "" {
		a, err = f.c.Account(ctx, a.Payer)
	}
	var apiErr *billingapi.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return a.Balance > 0, nil
}
