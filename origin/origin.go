package origin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/namesys"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/origin/origindb"
	"go.uber.org/zap"
)

// Config configures an Origin.
type Config struct {
	// DataDir holds the block store (blocks/), the metadata database
	// (origin.db), upload staging files (staging/) and, by default, the
	// origin's key (origin.key). Required.
	DataDir string
	// Key is the origin's identity. Default: loaded from DataDir/origin.key,
	// generated there on first start.
	Key *identity.Key
	// MaxUploadSize bounds one CAR upload, in bytes. Default: 8 GiB.
	MaxUploadSize int64
	// MaxUploadBlocks bounds the blocks of one CAR upload (each costs a
	// little memory while the upload is checked). Default: 1,000,000.
	MaxUploadBlocks int
	// MaxConcurrentUploads bounds how many CAR uploads are staged at once;
	// more get 503 with Retry-After. Default: 4.
	MaxConcurrentUploads int
	// PublisherQuota bounds the bytes each publisher may store: the blocks
	// its uploads newly add (blocks the origin already holds, whoever
	// uploaded them, are not counted again). An upload that would cross it
	// is refused with 413 and not kept. Default: 0, unlimited; topcdn
	// origin's --publisher-quota defaults to 10 GiB.
	PublisherQuota int64
	// Publishers, when set, are the only keys whose signed uploads are
	// accepted; others get 403. Default: empty, any key may upload (each
	// within PublisherQuota).
	Publishers []peer.ID
	// Funds, when set, is asked before each upload whether its publisher
	// can pay (billing's view of the account); a publisher who cannot is
	// refused with 402 before any byte is read. Default: nil, no check.
	Funds Funds
	// Deserialized makes the gateway also answer deserialized requests
	// (files and directories, as a browser wants), not only the trustless
	// raw, CAR and IPNS record responses. Default: false.
	Deserialized bool
	// AllowIncomplete accepts uploads whose blocks link to blocks neither
	// in the upload nor stored (roots must still be present). For test
	// fixtures that leave blocks out on purpose, such as those of
	// ipfs/gateway-conformance; the store is then no longer closed under
	// links, so it requires Stripe to be nil. Default: false.
	AllowIncomplete bool
	// Stripe, when set, moves published content to storage peers (see
	// durability.StripeConfig). Default: nil, content stays on the
	// origin's disk.
	Stripe *durability.StripeConfig
	// HeartbeatInterval is how often storage peers send heartbeats; a peer
	// silent for three intervals is unhealthy. Default: 10s.
	HeartbeatInterval time.Duration
	// Logger receives structured logs. Default: no logging.
	Logger *zap.Logger
	// Registry receives the origin's and the gateway's Prometheus metrics and
	// is served at /metrics. Default: a new registry.
	Registry *prometheus.Registry
}

// Origin is a content-addressed origin: a verified block store, IPNS
// records and human names, served over HTTP by Handler.
type Origin struct {
	cfg        Config
	key        *identity.Key
	log        *zap.Logger
	metrics    *metrics
	ds         *flatfs.Datastore
	local      blockstore.Blockstore // blocks on the origin's disk, verified on read
	blocks     blockstore.Blockstore // local, then striped on storage peers
	db         *sql.DB
	stagingDir string
	publishers map[peer.ID]bool // Config.Publishers; empty: any key
	handler    http.Handler
	uploads    chan struct{} // semaphore: one token per running upload
	storage    *durability.Keeper

	// Testing.
	now func() time.Time
}

// New opens (or creates) the origin stored in cfg.DataDir. Staging files
// left by an upload that was interrupted are removed: such an upload never
// became visible and can be retried.
func New(ctx context.Context, cfg Config) (*Origin, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("origin: DataDir is required")
	}
	if cfg.MaxUploadSize <= 0 {
		cfg.MaxUploadSize = 8 << 30
	}
	if cfg.MaxUploadBlocks <= 0 {
		cfg.MaxUploadBlocks = 1_000_000
	}
	if cfg.MaxConcurrentUploads <= 0 {
		cfg.MaxConcurrentUploads = 4
	}
	if cfg.PublisherQuota < 0 {
		return nil, errors.New("origin: PublisherQuota must not be negative (0: unlimited)")
	}
	if cfg.AllowIncomplete && cfg.Stripe != nil {
		return nil, errors.New("origin: AllowIncomplete needs striping off (Stripe nil)")
	}
	if cfg.Stripe != nil {
		if err := cfg.Stripe.Validate(); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	o := &Origin{cfg: cfg, log: cfg.Logger, now: time.Now, stagingDir: filepath.Join(cfg.DataDir, "staging"),
		uploads: make(chan struct{}, cfg.MaxConcurrentUploads)}
	var err error
	if o.key = cfg.Key; o.key == nil {
		if o.key, err = identity.LoadOrGenerate(filepath.Join(cfg.DataDir, "origin.key")); err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
	}
	if err := os.RemoveAll(o.stagingDir); err != nil {
		return nil, fmt.Errorf("origin: clear staging: %w", err)
	}
	if err := os.MkdirAll(o.stagingDir, 0o700); err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	if o.metrics, err = newMetrics(cfg.Registry); err != nil {
		return nil, fmt.Errorf("origin: metrics: %w", err)
	}
	if len(cfg.Publishers) > 0 {
		o.publishers = make(map[peer.ID]bool, len(cfg.Publishers))
		for _, p := range cfg.Publishers {
			o.publishers[p] = true
		}
	}
	if o.ds, err = openBlocks(filepath.Join(cfg.DataDir, "blocks")); err != nil {
		return nil, err
	}
	o.local = &verifyingBlockstore{
		Blockstore: blockstore.NewIdStore(&cidBlockstore{ds: o.ds}),
		log:        o.log,
		metrics:    o.metrics,
	}
	union := &unionBlockstore{Blockstore: o.local}
	o.blocks = union
	if o.db, err = origindb.Open(ctx, filepath.Join(cfg.DataDir, "origin.db")); err != nil {
		o.ds.Close()
		return nil, err
	}
	if o.storage, err = durability.New(durability.Config{Stripe: cfg.Stripe, HeartbeatInterval: cfg.HeartbeatInterval,
		DB: o.db, Key: o.key, Local: o.local, Blocks: o.blocks, Logger: o.log, Registry: cfg.Registry}); err != nil {
		o.Close()
		return nil, err
	}
	union.striped = o.storage // the union reads striped blocks through the keeper, which walks DAGs through the union
	if o.handler, err = o.newHandler(); err != nil {
		o.Close()
		return nil, err
	}
	o.log.Info("origin opened", zap.String("data", cfg.DataDir), zap.Stringer("peer_id", o.key.ID))
	return o, nil
}

// Run does the origin's background work until ctx ends: its storage side
// (Storage) stripes published content to storage peers, audits them,
// repairs segments that lost shards and sweeps orphan shards. Without a
// StripeConfig it only waits.
func (o *Origin) Run(ctx context.Context) { o.storage.Run(ctx) }

// Storage returns the origin's storage side: its storage peers, and the
// content it placed on them.
func (o *Origin) Storage() *durability.Keeper { return o.storage }

// ID returns the origin's identity key.
func (o *Origin) ID() *identity.Key { return o.key }

// Handler returns the origin's HTTP API and Trustless Gateway.
func (o *Origin) Handler() http.Handler { return o.handler }

// Close releases the database and block store.
func (o *Origin) Close() error {
	var errs []error
	if o.db != nil {
		errs = append(errs, o.db.Close())
	}
	if o.ds != nil {
		errs = append(errs, o.ds.Close())
	}
	return errors.Join(errs...)
}

// Missing returns the CIDs among cs that the origin does not store, in
// order. Identity CIDs are never missing.
func (o *Origin) Missing(ctx context.Context, cs []cid.Cid) ([]cid.Cid, error) {
	var missing []cid.Cid
	for _, c := range cs {
		if dag.IsIdentity(c) {
			continue
		}
		ok, err := o.blocks.Has(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("origin: has %s: %w", c, err)
		}
		if !ok {
			missing = append(missing, c)
		}
	}
	return missing, nil
}

// newGateway builds boxo's gateway over the block store, with IPNS records
// and human names (as DNSLink) answered from the database.
func (o *Origin) newGateway() (http.Handler, error) {
	vs := valueStore{o: o}
	ns, err := namesys.NewNameSystem(vs, // no cache: the database is the truth
		namesys.WithDNSResolverWithTTL(o.lookupDNSLink))
	if err != nil {
		return nil, fmt.Errorf("origin: name system: %w", err)
	}
	backend, err := gateway.NewBlocksBackend(blockservice.New(o.blocks, nil),
		gateway.WithValueStore(vs),
		gateway.WithNameSystem(ns),
		gateway.WithPrometheusRegistry(o.cfg.Registry))
	if err != nil {
		return nil, fmt.Errorf("origin: gateway backend: %w", err)
	}
	return gateway.NewHandler(gateway.Config{
		DeserializedResponses: o.cfg.Deserialized,
		NoDNSLink:             true,
		MetricsRegistry:       o.cfg.Registry,
	}, backend), nil
}
