package origin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/namesys"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

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
	db         *sqldb.DB
	stagingDir string
	publishers map[peer.ID]bool // Config.Publishers; empty: any key
	handler    http.Handler
	uploads    chan struct{} // semaphore: one token per running upload
	storage    *durability.Keeper
	originIDs  []peer.ID    // Config.OriginIDs, or the key's ID alone
	changes    *nameFeed    // the name-change stream's readers and memo
	purges     *purgeLimits // purges per name, in memory (one process)

	// stripeBeforeAck: an upload is striped onto the storage peers before
	// it is acknowledged (StripeNow), not queued and waited for up to
	// StripeWait. Set with PostgreSQL and striping: several origins share
	// the database, and an acknowledged publish must not live on one
	// origin's disk alone; with SQLite, one origin, the upload is
	// acknowledged once staged and striped in the background (or waited
	// for).
	stripeBeforeAck bool

	// Testing.
	now         func() time.Time
	keepChanges int // trimming keeps the last keepChanges changes
}

// New opens (or creates) the origin stored in cfg.DataDir. Staging files
// left by an upload that was interrupted are removed: such an upload never
// became visible and can be retried.
func New(ctx context.Context, cfg Config) (*Origin, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	o := &Origin{cfg: cfg, log: cfg.Logger, now: time.Now, stagingDir: filepath.Join(cfg.DataDir, "staging"),
		uploads: make(chan struct{}, cfg.MaxConcurrentUploads), purges: newPurgeLimits(), keepChanges: keepNameChanges}
	var err error
	if o.key = cfg.Key; o.key == nil {
		if o.key, err = identity.LoadOrGenerate(filepath.Join(cfg.DataDir, "origin.key")); err != nil {
			return nil, fmt.Errorf("origin: %w", err)
		}
	}
	o.originIDs = []peer.ID{o.key.ID}
	if len(cfg.OriginIDs) > 0 {
		if !slices.Contains(cfg.OriginIDs, o.key.ID) {
			return nil, fmt.Errorf("origin: this origin's ID %s is not among OriginIDs %v: it would sign what no verifier accepts", o.key.ID, cfg.OriginIDs)
		}
		o.originIDs = slices.Clone(cfg.OriginIDs)
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
	if err := o.openStores(ctx); err != nil {
		return nil, err
	}
	if err := o.openNameFeed(ctx); err != nil {
		o.Close()
		return nil, err
	}
	if o.handler, err = o.newHandler(); err != nil {
		o.Close()
		return nil, err
	}
	o.stripeBeforeAck = o.db.Postgres() && cfg.Stripe != nil
	if o.db.Postgres() && cfg.Stripe == nil {
		o.log.Warn("PostgreSQL without striping: uploads are acknowledged on this origin's disk alone, and other origins sharing the database cannot serve them")
	}
	o.log.Info("origin opened", zap.String("data", cfg.DataDir), zap.Bool("postgres", o.db.Postgres()),
		zap.Bool("stripe_before_ack", o.stripeBeforeAck), zap.Stringer("peer_id", o.key.ID))
	return o, nil
}

// openStores opens the block store and the database, and wires in the
// storage side over them; on failure it closes what it opened.
func (o *Origin) openStores(ctx context.Context) error {
	var err error
	if o.ds, err = openBlocks(filepath.Join(o.cfg.DataDir, "blocks")); err != nil {
		return err
	}
	o.local = &verifyingBlockstore{
		Blockstore: blockstore.NewIdStore(&cidBlockstore{ds: o.ds}),
		log:        o.log,
		metrics:    o.metrics,
	}
	union := &unionBlockstore{Blockstore: o.local}
	o.blocks = union
	if o.db, err = origindb.Open(ctx, o.cfg.DB); err != nil {
		o.ds.Close()
		return err
	}
	if o.storage, err = durability.New(durability.Config{Stripe: o.cfg.Stripe, HeartbeatInterval: o.cfg.HeartbeatInterval,
		DB: o.db, Key: o.key, OriginIDs: o.originIDs, Local: o.local, Blocks: o.blocks, Logger: o.log, Registry: o.cfg.Registry}); err != nil {
		o.Close()
		return err
	}
	// The union reads striped blocks through the Keeper, which walks DAGs
	// through the union: one of them is made first and told of the other.
	union.striped = o.storage
	return nil
}

// Run does the origin's background work until ctx ends: it records itself
// in table origins every 10 s (warning of origins sharing the database
// set up otherwise), trims the name-change stream every hour
// (Config.NameChangesRetention), follows
// the changes other origins sharing a PostgreSQL database append, and its
// storage side (Storage) stripes published content to storage peers,
// audits them, repairs segments that lost shards and sweeps orphan
// shards; without a StripeConfig the storage side only waits.
func (o *Origin) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		tick.NowAndEvery(ctx, nameChangesTrimInterval, func(ctx context.Context) {
			if err := o.trimNameChanges(ctx); err != nil && ctx.Err() == nil {
				o.log.Warn("trimming the name changes failed", zap.Error(err))
			}
		})
	})
	wg.Go(func() { o.heartbeatOrigins(ctx) })
	if o.db.Postgres() {
		wg.Go(func() { o.followNameChanges(ctx) })
	}
	o.storage.Run(ctx)
	wg.Wait()
}

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
		gateway.WithMaxTraversalDepth(gatewayTraversalDepth), // above MaxDAGDepth: a stored DAG never reaches it
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
