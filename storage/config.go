package storage

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// DefaultCapacity is the capacity a peer lends when Config.Capacity is
// unset: 10 GiB.
const DefaultCapacity = 10 << 30

// Config configures a Server. The zero value of a field means its
// default; New refuses negative values.
type Config struct {
	// DataDir holds the shards (shards/), the served read orders
	// (storage.db), the pinned origin ID (origin-id), upload temp files
	// (tmp/) and, by default, the peer's key (peer.key). Required.
	DataDir string
	// Key is the peer's identity. Default: loaded from DataDir/peer.key,
	// generated there on first start.
	Key *identity.Key
	// Origin is the origin's base URL, e.g. http://127.0.0.1:8081.
	// Heartbeats go to it, and New asks it for the origins' peer IDs when
	// none is configured or pinned (while it cannot be reached, New
	// retries: from 0.5 s up to 30 s apart, logged, until its ctx is
	// done). Required unless an origin ID is set; Run needs it.
	Origin string
	// OriginIDs are the peer IDs of the network's origins, each signing
	// with its own key: only they may sign write, delete and audit orders.
	// They are pinned in DataDir/origin-id (one per line) on first start;
	// a later start takes a set that shares an ID with the pinned one (an
	// origin's key rotated) and refuses one that shares none. Default:
	// the pinned set, else GET {Origin}/healthz's origin_ids (its peer_id
	// alone from an origin that lists none).
	OriginIDs []peer.ID
	// OriginID is one more origin ID, added to OriginIDs: a network of one
	// origin sets it alone.
	OriginID peer.ID
	// Capacity is how many bytes of shards the peer accepts. New refuses
	// (ErrCapacityTooLarge) one larger than DataDir's filesystem can hold,
	// its free space plus the shards already held. Default:
	// DefaultCapacity (10 GiB), lowered to what the filesystem can hold.
	Capacity int64
	// PublicAddr is the base URL the peer announces in heartbeats, e.g.
	// http://127.0.0.1:9001. Run needs it.
	PublicAddr string
	// Location is where the peer says it is, announced in heartbeats.
	// Default: none.
	Location *storageapi.Location
	// HeartbeatInterval is the time between two heartbeats. Default:
	// storageapi.DefaultHeartbeatInterval (10s).
	HeartbeatInterval time.Duration
	// Logger receives structured logs. Default: no logging.
	Logger *zap.Logger
	// Registry receives the peer's Prometheus metrics and is served at
	// /metrics. Default: a new registry.
	Registry *prometheus.Registry

	// Testing.
	originBackoff backoff // default: defaultOriginBackoff
}

// withDefaults checks cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.DataDir == "" {
		return cfg, errors.New("storage: DataDir is required")
	}
	if cfg.Origin == "" && cfg.OriginID == "" && len(cfg.OriginIDs) == 0 {
		return cfg, errors.New("storage: Origin (or an origin ID) is required")
	}
	if cfg.Origin != "" {
		u, err := storageapi.ParseBaseURL(cfg.Origin)
		if err != nil {
			return cfg, fmt.Errorf("storage: Origin: %w", err)
		}
		cfg.Origin = u
	}
	if cfg.PublicAddr != "" {
		u, err := storageapi.ParseBaseURL(cfg.PublicAddr)
		if err != nil {
			return cfg, fmt.Errorf("storage: PublicAddr: %w", err)
		}
		cfg.PublicAddr = u
	}
	if cfg.OriginID != "" {
		if err := cfg.OriginID.Validate(); err != nil {
			return cfg, fmt.Errorf("storage: OriginID: %w", err)
		}
	}
	for _, id := range cfg.OriginIDs {
		if err := id.Validate(); err != nil {
			return cfg, fmt.Errorf("storage: OriginIDs: %s: %w", id, err)
		}
	}
	if cfg.Capacity < 0 {
		return cfg, fmt.Errorf("storage: Capacity %d is negative", cfg.Capacity)
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.HeartbeatInterval < 0 {
		return cfg, fmt.Errorf("storage: HeartbeatInterval %s is negative", cfg.HeartbeatInterval)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = storageapi.DefaultHeartbeatInterval
	}
	if l := cfg.Location; l != nil && !(l.Lat >= -90 && l.Lat <= 90 && l.Lon >= -180 && l.Lon <= 180) {
		return cfg, fmt.Errorf("storage: Location %g,%g: want latitude in [-90,90] and longitude in [-180,180]", l.Lat, l.Lon)
	}
	if cfg.originBackoff == (backoff{}) {
		cfg.originBackoff = defaultOriginBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	return cfg, nil
}
