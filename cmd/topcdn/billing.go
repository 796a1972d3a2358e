package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/billing"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/prom"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// faultEnv names the environment variable that makes `topcdn billing`
// kill itself (SIGKILL) at a named stage, for crash tests:
// "kill-mid-settle" kills it inside the first paying epoch's settlement
// transaction, after a publisher's debit is written and before the
// operator's credit.
const faultEnv = "TOPCDN_BILLING_FAULT"

func newBillingCmd() *cobra.Command {
	var (
		cfg                                    billing.Config
		listen, dsn, dnsURL, keyFile, logLevel string
		origins, originIDs                     []string
		settleEvery, probeEvery                time.Duration
		shared                                 []string
	)
	cmd := &cobra.Command{
		Use:   "billing --listen ADDR --db DSN [--origin URL] [--dns URL]",
		Short: "Verify served-byte receipts and keep the token ledger",
		Long: `billing runs the billing service: edges post signed batches of the
responses they served (one per epoch), storage peers post claims for the
read orders edges signed for them, and billing checks every one
(signature, epoch window, replays, published content and sizes,
self-dealing, a sampling prober) before it credits it, and pays each no
more than evidence from parties that do not profit from it allows. Each closed epoch is settled in one transaction: publishers are
debited, edge and storage operators credited; --price-gib-served is paid
per GiB served (edges and storage reads), --price-gib-month-stored per
GiB-month of shards held, prorated per epoch. Amounts are integers in the
token's smallest unit.

--db is a file path or sqlite:PATH (embedded SQLite) or postgres://…
(PostgreSQL); the schema is migrated at start. --key is the billing
operator's key (default: billing.key next to a SQLite database, created if
missing): only deposits signed with it are applied, so whoever holds the
file funds publishers ('topcdn billing deposit --key FILE …').

--origin is where published content is learned (names, blocks, manifests);
without it every record is refused as unpublished. Only edges the
operator admitted are paid ('topcdn billing admit'). --dns is the DNS
router (GET URL/api/v1/edges), billing's witness of each edge's demand:
per epoch and site, an edge is paid at most --demand-factor times the
site's bytes for each client subnet the router sent it, plus the bytes of
the router's and billing's probes, and never more than the epoch byte
counter of its own heartbeats. Without --dns no edge is paid. Settlement holds an
edge's records of striped content that no read order of the edge backs
(while storage peers claim other reads of it) and refuses them as
no_upstream_reads after --backing-wait. billing/README.md, "Syntax", lists
every endpoint.

When it is ready it prints "listening on http://ADDR" on standard output.
SIGINT or SIGTERM stop it cleanly.`,
		Example: `  topcdn billing --listen 127.0.0.1:8090 --db ./billing/ledger.db --origin http://127.0.0.1:8081 \
      --epoch 1m --price-gib-served 1000000 --price-gib-month-stored 200000
  topcdn billing deposit --billing http://127.0.0.1:8090 --key ./billing/billing.key --account 12D3… --amount 5000000`,
		Args: cobra.NoArgs,
		RunE: withLogger(&logLevel, func(cmd *cobra.Command, log *zap.Logger) error {
			key, err := billingKey(keyFile, dsn)
			if err != nil {
				return err
			}
			cfg.Logger, cfg.Registry = log, prom.NewRegistry()
			for _, s := range shared {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return fmt.Errorf("--shared-prefix %q: %w", s, err)
				}
				cfg.SharedPrefixes = append(cfg.SharedPrefixes, p.Masked())
			}
			if dnsURL != "" {
				cfg.DNS = witness.NewDNSDirectory(dnsURL, nil)
			}
			if os.Getenv(faultEnv) == "kill-mid-settle" {
				cfg.FaultHook = func(stage string) {
					if stage == "settle-mid" {
						log.Warn("fault injection: killing myself mid-settlement")
						syscall.Kill(os.Getpid(), syscall.SIGKILL)
						time.Sleep(time.Minute)
					}
				}
			}
			var content billing.Content = noOrigin{}
			if urls := originapi.SplitURLs(origins...); len(urls) > 0 {
				pool, err := originapi.NewPool(urls, originapi.WithPoolLogger(log), originapi.WithPoolMetrics(cfg.Registry, "billing"))
				if err != nil {
					return fmt.Errorf("--origin: %w", err)
				}
				ids, err := decodePeerIDs("origin-id", originIDs)
				if err != nil {
					return err
				}
				content = witness.NewOriginContent(urls[0], nil, witness.WithPool(pool), witness.WithOriginIDs(ids...))
			} else {
				log.Warn("no --origin: every record will be refused as unpublished")
			}
			return runBilling(cmd.Context(), cmd, listen, dsn, key, content, cfg, settleEvery, probeEvery, log)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8090", "address to serve HTTP on")
	f.StringVar(&dsn, "db", "", "ledger database: a file path or sqlite:PATH, or postgres://… (required)")
	originsFlag(f, &origins, "base URL of the origin whose published content is billed")
	originIDsFlag(f, &originIDs, "an origin's peer ID, which signs manifests and the billing log (default: asked from the origin)")
	f.StringVar(&dnsURL, "dns", "", "base URL of the DNS router's API: the demand evidence edges are paid within, and the prober (without it no edge is paid)")
	f.StringVar(&keyFile, "key", "", "billing operator key; deposits and admissions must be signed with it (default: billing.key next to a SQLite --db)")
	f.DurationVar(&cfg.Epoch, "epoch", billingapi.DefaultEpoch, "epoch length, whole seconds; edges must use the same")
	f.Int64Var(&cfg.PricePerGiBServed, "price-gib-served", 0, "tokens (smallest unit) per GiB served, paid to edges and storage peers")
	f.Int64Var(&cfg.PricePerGiBMonthStored, "price-gib-month-stored", 0, "tokens (smallest unit) per GiB-month stored, paid to storage peers")
	f.DurationVar(&cfg.Grace, "grace", billing.DefaultGrace, "how long a publisher may be out of funds before it is listed as suspended; negative: none")
	f.DurationVar(&cfg.SettleDelay, "settle-delay", 0, "how long after its end an epoch is settled (default: one epoch); negative: none")
	f.DurationVar(&cfg.AcceptWindow, "accept-window", billing.DefaultAcceptWindow, "how long after its end an epoch's batches are accepted")
	f.DurationVar(&settleEvery, "settle-every", 0, "settle closed epochs this often (default: off, only on POST /api/v1/settle)")
	f.DurationVar(&probeEvery, "probe-every", billing.DefaultProbeInterval, "with --dns, probe a random served object this often; negative: off")
	f.StringSliceVar(&shared, "shared-prefix", nil, "client prefixes that are no edge's own traffic though edges post from them (a devnet on loopback: 127.0.0.0/24); requests from an edge's own addresses and from loopback are otherwise refused as self_dealing")
	f.Float64Var(&cfg.DemandFactor, "demand-factor", billing.DefaultDemandFactor, "how many times a site's bytes one client subnet the router sent an edge may bring it per epoch")
	f.DurationVar(&cfg.DemandWait, "demand-wait", billing.DefaultDemandWait, "how long an epoch waits for the DNS router's evidence before it is settled without it (its edges then unpaid)")
	f.Float64Var(&cfg.DemandHeadroom, "demand-headroom", billing.DefaultDemandHeadroom, "at most this many times the bytes other edges' clients fetched per unit the router sent them; negative: off (the site's bytes alone bound)")
	f.DurationVar(&cfg.BackingWait, "backing-wait", 0, "how long settlement holds an edge's records of striped content no read order of the edge backs before refusing them as no_upstream_reads (default: 10 epochs, at least 1h)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.MarkFlagRequired("db")
	cmd.AddCommand(newBillingDepositCmd(), newBillingAdmitCmd(), newBillingBalanceCmd(), newBillingStatementCmd(), newBillingSettleCmd())
	return cmd
}

// billingKey loads the operator key: keyFile, or billing.key next to a
// SQLite database (created if missing).
func billingKey(keyFile, dsn string) (*identity.Key, error) {
	if keyFile != "" {
		return identity.Load(keyFile)
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return nil, errors.New("--key is required with a PostgreSQL --db")
	}
	path := strings.TrimPrefix(dsn, "sqlite:")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return identity.LoadOrGenerate(filepath.Join(filepath.Dir(path), "billing.key"))
}

func runBilling(ctx context.Context, cmd *cobra.Command, listen, dsn string, key *identity.Key, content billing.Content,
	cfg billing.Config, settleEvery, probeEvery time.Duration, log *zap.Logger) error {
	db, err := billing.OpenDB(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	l, err := billing.New(ctx, db, content, key.ID, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	defer ln.Close()
	log.Info("billing listening", zap.String("addr", ln.Addr().String()), zap.Stringer("operator", key.ID),
		zap.Duration("epoch", l.Epoch()), zap.Bool("dns_evidence", cfg.DNS != nil))
	if cfg.DNS == nil {
		log.Warn("no --dns: no DNS router vouches for any edge's demand, so no edge will be paid")
	}
	background := func(ctx context.Context) {
		done := make(chan struct{}, 3)
		n := 0
		if cfg.DNS != nil {
			n++
			go func() {
				defer func() { done <- struct{}{} }()
				l.RunEvidence(ctx, 0)
			}()
		}
		if settleEvery > 0 {
			n++
			go func() {
				defer func() { done <- struct{}{} }()
				tick.Every(ctx, settleEvery, func(ctx context.Context) {
					if _, err := l.Settle(ctx); err != nil && ctx.Err() == nil {
						log.Warn("settle", zap.Error(err))
					}
				})
			}()
		}
		if cfg.DNS != nil && probeEvery >= 0 {
			n++
			go func() {
				defer func() { done <- struct{}{} }()
				l.RunProber(ctx, witness.HTTPProber{}, probeEvery)
			}()
		}
		for range n {
			<-done
		}
	}
	return serve(ctx, cmd, "billing", ln, l.Handler(cfg.Registry.(prometheus.Gatherer)), background, log)
}

// noOrigin is the Content of a billing service without --origin: nothing
// is known to be published.
type noOrigin struct{}

func (noOrigin) Object(ctx context.Context, name, root, c string) (witness.Object, error) {
	return witness.Object{}, &billing.RejectError{Reason: billingapi.ReasonUnpublished, Err: errors.New("billing runs without --origin")}
}

func (noOrigin) ShardPublisher(ctx context.Context, shard string) (peer.ID, error) {
	return "", &billing.RejectError{Reason: billingapi.ReasonUnknownShard, Err: errors.New("billing runs without --origin")}
}

func (noOrigin) Holdings(ctx context.Context) ([]witness.Holding, error) { return nil, nil }

var _ billing.Content = noOrigin{}
