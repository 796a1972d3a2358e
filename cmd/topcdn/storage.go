package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/prom"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/storage"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

func newStorageCmd() *cobra.Command {
	var (
		cfg                                                storage.Config
		listen, keyFile                                    string
		publicAddr, location, region, logLevel, billingURL string
		claimEvery                                         time.Duration
		origins, originIDs                                 []string
	)
	cmd := &cobra.Command{
		Use:   "storage --data DIR --origin URL [--listen ADDR] [--capacity SIZE]",
		Short: "Lend disk to an origin as a storage peer",
		Long: `storage runs a storage peer: it keeps erasure-coded shards for one origin
and serves byte ranges of them to readers.

Every request carries a signed order (header X-Topcdn-Order). Only the origin
may write, delete and audit shards; any reader may read, and each read order
is served at most once and kept in DIR/storage.db as the proof of bytes
served. A shard is stored only whole and only if its bytes hash to its ID
(fsynced before it is acknowledged), under DIR/shards; at most --capacity
bytes of shards are accepted, beyond which uploads get 507. A --capacity
larger than DIR's filesystem can hold (its free space plus the shards
already held) is refused; the default is lowered to fit, with a warning.

While the origin cannot be reached on first start, the peer retries
(backoff from 0.5s to 30s, jittered), logging "origin unreachable,
retrying in …", until it answers or the peer is stopped.

The origin's peer ID is learned from GET URL/healthz on first start and
pinned in DIR/origin-id; a later start with an origin of another ID is
refused. The peer's own key is DIR/peer.key (created if missing) unless
--key is given.

With --billing URL the peer claims the bytes it served from billing every
--claim-every: it sends the kept read orders (POST URL/api/v1/claims,
signed with its key) and marks those billing collected, dropping them once
their orders have expired.

The peer announces itself to the origin with a signed heartbeat (POST
URL/api/v1/peers/heartbeat) at start and every --heartbeat, giving its
--public-addr, capacity, free space, shard count and --location.

storage/README.md describes the peer and lists every request.

When it is ready it prints "listening on http://ADDR" on standard output.
SIGINT or SIGTERM stop it cleanly.`,
		Example: `  topcdn storage --data ./peer1 --origin http://127.0.0.1:8081 --listen 127.0.0.1:9001 \
      --capacity 50GiB --location 50.11,8.68 --region eu-fra`,
		Args: cobra.NoArgs,
		RunE: withLogger(&logLevel, func(cmd *cobra.Command, log *zap.Logger) error {
			var err error
			cfg.Logger, cfg.Registry = log, prom.NewRegistry()
			if !cmd.Flags().Changed("capacity") {
				cfg.Capacity = 0 // the default, which storage.New lowers to what the disk holds
			}
			if cfg.OriginIDs, err = decodePeerIDs("origin-id", originIDs); err != nil {
				return err
			}
			cfg.Origins = originapi.SplitURLs(origins...)
			if cfg.Location, err = parseLocation(location, region); err != nil {
				return err
			}
			if keyFile != "" {
				if cfg.Key, err = identity.Load(keyFile); err != nil {
					return err
				}
			}
			if billingURL != "" && cfg.Key == nil {
				// The claimer signs with the peer's key: load it as New would.
				if cfg.Key, err = identity.LoadOrGenerate(filepath.Join(cfg.DataDir, "peer.key")); err != nil {
					return err
				}
			}
			return runStorage(cmd.Context(), cmd, listen, publicAddr, cfg, billingURL, claimEvery, log)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9001", "address to serve HTTP on")
	f.StringVar(&cfg.DataDir, "data", "", "directory for shards, database and key (required)")
	originsFlag(f, &origins, "base URL of the origin to serve, e.g. http://127.0.0.1:8081 (required)")
	originIDsFlag(f, &originIDs, "an origin's peer ID (default: asked from the origin on first start, then pinned)")
	f.StringVar(&keyFile, "key", "", "peer key file (default: DIR/peer.key, created if missing)")
	sizeVar(f, &cfg.Capacity, "capacity", storage.DefaultCapacity, "most bytes of shards to keep")
	f.StringVar(&publicAddr, "public-addr", "", "base URL announced to the origin (default: http://ADDR, the address bound)")
	f.StringVar(&location, "location", "", `where this peer is, "LAT,LON" in degrees (e.g. 50.11,8.68)`)
	f.StringVar(&region, "region", "", "failure domain announced with --location, e.g. eu-fra")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat", storageapi.DefaultHeartbeatInterval, "time between heartbeats to the origin")
	f.StringVar(&billingURL, "billing", "", "billing service URL to claim served reads from (default: none)")
	f.DurationVar(&claimEvery, "claim-every", billingapi.DefaultClaimInterval, "with --billing, time between claims; negative: off")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.MarkFlagRequired("data")
	cmd.MarkFlagRequired("origin")
	cmd.AddCommand(newStorageStatusCmd())
	return cmd
}

// parseLocation parses --location "LAT,LON" and --region; storage.Config
// checks the coordinates.
func parseLocation(location, region string) (*storageapi.Location, error) {
	if location == "" {
		if region != "" {
			return nil, errors.New("--region needs --location")
		}
		return nil, nil
	}
	lat, lon, ok := strings.Cut(location, ",")
	if !ok {
		return nil, fmt.Errorf("--location %q: want LAT,LON", location)
	}
	l := &storageapi.Location{Region: region}
	var err1, err2 error
	l.Lat, err1 = strconv.ParseFloat(strings.TrimSpace(lat), 64)
	l.Lon, err2 = strconv.ParseFloat(strings.TrimSpace(lon), 64)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("--location %q: want LAT,LON in degrees: %w", location, err)
	}
	return l, nil
}

func runStorage(ctx context.Context, cmd *cobra.Command, listen, publicAddr string, cfg storage.Config,
	billingURL string, claimEvery time.Duration, log *zap.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer ln.Close()
	if publicAddr == "" {
		addr := ln.Addr().(*net.TCPAddr)
		if addr.IP.IsUnspecified() {
			return fmt.Errorf("storage: listening on all interfaces (%s): set --public-addr to the URL the origin and readers reach this peer at", addr)
		}
		publicAddr = "http://" + addr.String()
	}
	cfg.PublicAddr = publicAddr
	s, err := storage.New(ctx, cfg)
	if errors.Is(err, storage.ErrCapacityTooLarge) {
		return fmt.Errorf("--capacity: %w", err)
	}
	if err != nil {
		return err
	}
	defer s.Close()

	log.Info("storage peer listening", zap.String("addr", ln.Addr().String()), zap.String("public_addr", publicAddr),
		zap.Stringer("peer_id", s.ID()))
	heartbeats := func(ctx context.Context) {
		claims := make(chan struct{})
		go func() {
			defer close(claims)
			if billingURL != "" {
				billingapi.RunClaimer(ctx, billingapi.NewClient(billingURL, nil), cfg.Key, s, claimEvery, log.Named("billing"))
			}
		}()
		if err := s.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("heartbeats stopped", zap.Error(err))
		}
		<-claims
	}
	return serve(ctx, cmd, "storage", ln, s.Handler(), heartbeats, log)
}
