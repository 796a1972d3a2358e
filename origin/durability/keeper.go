package durability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/sqldb"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// Keeper is the origin's storage side: it registers storage peers from
// their signed heartbeats, stripes published roots onto them, reads
// striped blocks back, and audits, repairs and sweeps what it placed.
type Keeper struct {
	cfg     Config // defaults set
	db      *sqldb.DB
	key     *identity.Key
	origins map[peer.ID]bool // Config.OriginIDs and key's: whose manifests are read back
	log     *zap.Logger
	metrics *metrics
	local   LocalBlocks
	blocks  BlockGetter

	// Striping (nil striper: off).
	stripeCfg  StripeConfig
	striper    *erasure.Striper
	shardStore erasure.ShardStore
	storage    *storageapi.Client
	peerStats  *erasure.PeerStats
	spans      *erasure.SpanCache
	readers    *lru.Cache[int64, cachedReader]
	addrs      addrCache
	stripeWake chan struct{}
	// attempts is closed, and replaced, after every attempt at a stripe
	// job (WaitStriped).
	attemptsMu sync.Mutex
	attempts   chan struct{}
	// running are the roots whose stripe jobs run in this process.
	runningMu sync.Mutex
	running   map[cid.Cid]bool

	// Testing.
	now  func() time.Time
	rand func() float64 // in [0, 1): the jitter of repair backoffs
}

// New returns the Keeper of the origin whose database, key and block
// stores cfg gives. It starts nothing; Run does the background work.
func New(cfg Config) (*Keeper, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	kp := &Keeper{cfg: cfg, db: cfg.DB, key: cfg.Key, log: cfg.Logger, local: cfg.Local, blocks: cfg.Blocks,
		now: time.Now, rand: rand.Float64}
	var err error
	if kp.metrics, err = newMetrics(cfg.Registry); err != nil {
		return nil, fmt.Errorf("durability: metrics: %w", err)
	}
	kp.origins = map[peer.ID]bool{kp.key.ID: true}
	for _, id := range cfg.OriginIDs {
		kp.origins[id] = true
	}
	kp.addrs.m = map[peer.ID]cachedAddr{}
	kp.readers = newReaderCache()
	kp.peerStats = erasure.NewPeerStats()
	kp.spans = erasure.NewSpanCache(256 << 20)
	kp.stripeWake = make(chan struct{}, 1)
	kp.attempts = make(chan struct{})
	kp.running = map[cid.Cid]bool{}
	kp.storage = storageapi.NewClient(kp.key, nil)
	kp.shardStore = peerShards{keeper: kp, client: kp.storage}
	if cfg.Stripe != nil {
		kp.stripeCfg = *cfg.Stripe
		if kp.striper, err = erasure.New(kp.stripeCfg.DataShards, kp.stripeCfg.ParityShards,
			erasure.WithSegmentSize(kp.stripeCfg.SegmentSize), erasure.WithChunkSize(kp.stripeCfg.ChunkSize)); err != nil {
			return nil, fmt.Errorf("durability: %w", err)
		}
	}
	return kp, nil
}

// StripeConfig returns the striping settings in force, defaults filled
// in, or nil if striping is off.
func (kp *Keeper) StripeConfig() *StripeConfig {
	if kp.striper == nil {
		return nil
	}
	sc := kp.stripeCfg
	return &sc
}

// Run does the background work until ctx ends: striping published content
// to storage peers, auditing them, repairing segments that lost shards,
// and sweeping orphan shards. Without a StripeConfig it only waits.
func (kp *Keeper) Run(ctx context.Context) {
	if kp.striper == nil {
		<-ctx.Done()
		return
	}
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){kp.runStriper, kp.runAuditor, kp.runRepairer, kp.runSweeper} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
}
