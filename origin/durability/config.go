package durability

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/sqldb"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// DefaultHeartbeatInterval is how often storage peers are expected to send
// heartbeats when Config.HeartbeatInterval is not set: the peers' own
// default.
const DefaultHeartbeatInterval = storageapi.DefaultHeartbeatInterval

// Defaults of StripeConfig; the shard counts and sizes default to
// erasure's (DefaultDataShards, DefaultParityShards, DefaultSegmentSize,
// DefaultChunkSize).
const (
	DefaultAuditInterval  = 5 * time.Second
	DefaultAuditRefusals  = 3
	DefaultRepairInterval = 10 * time.Second
	DefaultSweepInterval  = time.Hour
	DefaultLeaseTTL       = 30 * time.Second
	// MinLeaseTTL is the shortest LeaseTTL taken: a lease must outlast a
	// few database round trips.
	MinLeaseTTL = 100 * time.Millisecond
	// DefaultLostAfterIntervals is LostAfter's default in heartbeat
	// intervals (Config.HeartbeatInterval).
	DefaultLostAfterIntervals = 30
)

// Config configures a Keeper: the origin's settings for its storage side,
// and what the Keeper uses of the origin.
type Config struct {
	// Stripe, when set, moves published content to storage peers (see
	// StripeConfig). Default: nil; peers still register and are listed,
	// but nothing is placed on them and Run only waits.
	Stripe *StripeConfig
	// HeartbeatInterval is how often storage peers send heartbeats; a peer
	// silent for three intervals is unhealthy. Default: 10s
	// (DefaultHeartbeatInterval).
	HeartbeatInterval time.Duration

	// DB is the origin's database, opened by origindb.Open: the Keeper
	// keeps peers, segments, manifests, stripe jobs and audits there.
	// Required.
	DB *sqldb.DB
	// Key is the origin's identity: it signs storage orders and manifests.
	// Required.
	Key *identity.Key
	// OriginIDs are the origins sharing DB, each signing with its own key:
	// the Keeper reads back (and re-signs) manifests any of them signed.
	// Default: Key's alone; Key's is always among them.
	OriginIDs []peer.ID
	// Local is the origin's own block store: stripe jobs read the blocks
	// to stripe there and, unless KeepLocal, delete them once striped.
	// Required.
	Local LocalBlocks
	// Blocks is all the origin holds, on its disk or striped: stripe jobs
	// walk a root's DAG through it. Required.
	Blocks BlockGetter
	// Logger receives structured logs. Default: no logging.
	Logger *zap.Logger
	// Registry receives the Keeper's metrics (topcdn_origin_striped_*,
	// _audits_total, ...; see the origin's README). Default: a new
	// registry.
	Registry prometheus.Registerer
}

// LocalBlocks is the origin's own block store, as stripe jobs use it.
type LocalBlocks interface {
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
	DeleteBlock(ctx context.Context, c cid.Cid) error
}

// BlockGetter reads a block the origin holds, wherever it is.
type BlockGetter interface {
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
}

// setDefaults fills in what cfg leaves unset, and checks what it needs.
func (cfg *Config) setDefaults() error {
	switch {
	case cfg.DB == nil:
		return errors.New("durability: DB is required")
	case cfg.Key == nil:
		return errors.New("durability: Key is required")
	case cfg.Local == nil || cfg.Blocks == nil:
		return errors.New("durability: Local and Blocks are required")
	}
	if cfg.HeartbeatInterval < 0 {
		return fmt.Errorf("durability: HeartbeatInterval %s is negative", cfg.HeartbeatInterval)
	}
	cfg.HeartbeatInterval = cmp.Or(cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Stripe != nil {
		sc := *cfg.Stripe
		sc.setDefaults(cfg.HeartbeatInterval)
		if err := sc.Validate(); err != nil {
			return err
		}
		cfg.Stripe = &sc
	}
	return nil
}

// StripeConfig turns on striping: published content moves from the
// origin's disk to storage peers, Reed-Solomon coded.
type StripeConfig struct {
	// DataShards (k) and ParityShards (m) of each segment. Default:
	// erasure.DefaultDataShards + erasure.DefaultParityShards (10+4).
	DataShards, ParityShards int
	// SegmentSize is the target segment size. Default:
	// erasure.DefaultSegmentSize (64 MiB).
	SegmentSize int64
	// ChunkSize is the size of the hashed shard chunks. Default:
	// erasure.DefaultChunkSize (32 KiB).
	ChunkSize int
	// KeepLocal keeps the origin's own copy of striped blocks. Default:
	// false (the peers hold the content; the origin keeps no full copy).
	KeepLocal bool
	// RepairThreshold is the number of healthy shards below which a
	// segment is repaired. Default: k+2.
	RepairThreshold int
	// LostAfter is how long a peer may be silent before its shards count
	// as lost: segments with a lost shard are repaired even above
	// RepairThreshold, so redundancy comes back in full (a peer merely
	// away for less is not worth moving data for). Default:
	// DefaultLostAfterIntervals (30) heartbeat intervals
	// (Config.HeartbeatInterval).
	LostAfter time.Duration
	// AuditInterval is the pause between two audits. Default:
	// DefaultAuditInterval (5s).
	AuditInterval time.Duration
	// AuditRefusals is how many audits of one shard in a row a peer that
	// keeps sending heartbeats may leave unanswered (a 403, a 5xx, a
	// timeout) before the shard counts as lost and is repaired, and the
	// peer flagged. A peer that is down is not refusing: its silence makes
	// its shards lost after LostAfter. Default: DefaultAuditRefusals (3).
	AuditRefusals int
	// RepairInterval is the pause between two scans for segments at risk.
	// Default: DefaultRepairInterval (10s).
	RepairInterval time.Duration
	// SweepInterval is the pause between two sweeps of orphan shards
	// (SweepOrphans). Default: DefaultSweepInterval (1h).
	SweepInterval time.Duration
	// LeaseTTL is how long an origin's hold on a background job lasts
	// unless renewed: the audit, repair and sweep passes (leases), a stripe
	// job (its claim) and a shard being put on a peer (placements). The
	// holder renews every third of it, so when it dies, another origin
	// sharing the database takes the work over within LeaseTTL (and the
	// job's interval). Default: DefaultLeaseTTL (30s); at least
	// MinLeaseTTL.
	LeaseTTL time.Duration
}

// setDefaults fills in what c leaves unset; heartbeat is the peers'
// heartbeat interval.
func (c *StripeConfig) setDefaults(heartbeat time.Duration) {
	if c.DataShards == 0 && c.ParityShards == 0 {
		c.DataShards, c.ParityShards = erasure.DefaultDataShards, erasure.DefaultParityShards
	}
	c.SegmentSize = cmp.Or(c.SegmentSize, erasure.DefaultSegmentSize)
	c.ChunkSize = cmp.Or(c.ChunkSize, erasure.DefaultChunkSize)
	c.RepairThreshold = cmp.Or(c.RepairThreshold, min(c.DataShards+2, c.DataShards+c.ParityShards))
	c.AuditInterval = cmp.Or(c.AuditInterval, DefaultAuditInterval)
	c.AuditRefusals = cmp.Or(c.AuditRefusals, DefaultAuditRefusals)
	c.RepairInterval = cmp.Or(c.RepairInterval, DefaultRepairInterval)
	c.SweepInterval = cmp.Or(c.SweepInterval, DefaultSweepInterval)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, DefaultLeaseTTL)
	c.LostAfter = cmp.Or(c.LostAfter, DefaultLostAfterIntervals*heartbeat)
}

// Validate reports whether New would take c: nothing negative (zero is
// the default, and none of it can be turned off), and, with its defaults
// filled in, what manifests and repair can work with. A manifest with
// chunks or segments outside erasure's limits never validates (every
// stripe job would upload its shards and then fail to sign), and a repair
// threshold above k+m can never be met (every repair pass would read
// every segment for nothing).
func (c StripeConfig) Validate() error {
	c.setDefaults(DefaultHeartbeatInterval)
	n := c.DataShards + c.ParityShards
	switch {
	case c.SegmentSize < 0 || c.RepairThreshold < 0 || c.LostAfter < 0 || c.AuditInterval < 0 || c.AuditRefusals < 0 ||
		c.RepairInterval < 0 || c.SweepInterval < 0 || c.LeaseTTL < 0:
		return errors.New("durability: negative segment size, repair threshold, lost-after, audit, refusals, repair, sweep or lease setting")
	case c.LeaseTTL < MinLeaseTTL:
		return fmt.Errorf("durability: lease TTL %s under %s", c.LeaseTTL, MinLeaseTTL)
	case c.ChunkSize < erasure.MinChunkSize || c.ChunkSize > erasure.MaxChunkSize:
		return fmt.Errorf("durability: chunk size %d outside [%d, %d]", c.ChunkSize, erasure.MinChunkSize, erasure.MaxChunkSize)
	case c.SegmentSize > erasure.MaxSegment-dag.MaxBlockSize:
		return fmt.Errorf("durability: segment size %d: at most %d (a segment may overrun it by a block)",
			c.SegmentSize, erasure.MaxSegment-dag.MaxBlockSize)
	case c.RepairThreshold > n:
		return fmt.Errorf("durability: repair threshold %d above the %d+%d shards of a segment", c.RepairThreshold,
			c.DataShards, c.ParityShards)
	}
	return nil
}
