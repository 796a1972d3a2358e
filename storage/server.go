package storage

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"go.uber.org/zap"
)

// originTimeout bounds each request the peer makes to the origin.
const originTimeout = 10 * time.Second

// Server is a storage peer: it keeps shards on the orders of its origin
// and serves ranges of them on readers' signed read orders, over HTTP by
// Handler. Run announces it to the origin.
type Server struct {
	cfg     Config
	key     *identity.Key
	origins originSet // whose orders it takes
	log     *zap.Logger
	metrics *metrics
	store   *store
	db      *sql.DB
	handler http.Handler
	client  *http.Client // to the origin

	// Testing.
	now func() time.Time
}

// New opens (or creates) the storage peer kept in cfg.DataDir. Temp files
// of uploads that were cut short are removed and the space in use is
// recounted from the shards on disk. When no origin ID is configured and
// none is pinned yet, New asks cfg.Origin for the origins' peer IDs; while
// the origin cannot be reached it retries, with capped and jittered
// backoff, logging "origin unreachable, retrying in …" each time, until
// ctx is done.
func New(ctx context.Context, cfg Config) (*Server, error) {
	explicitCapacity := cfg.Capacity != 0
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		client: &http.Client{Timeout: originTimeout},
		now:    time.Now,
	}
	if s.key = cfg.Key; s.key == nil {
		if s.key, err = identity.LoadOrGenerate(filepath.Join(cfg.DataDir, "peer.key")); err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
	}
	if s.origins, err = s.pinOrigins(ctx); err != nil {
		return nil, err
	}
	if s.store, err = openStore(cfg.DataDir, cfg.Capacity, s.log); err != nil {
		return nil, err
	}
	if err := s.fitCapacity(explicitCapacity); err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(cfg.Registry, s.store); err != nil {
		return nil, fmt.Errorf("storage: metrics: %w", err)
	}
	if s.db, err = openDB(ctx, filepath.Join(cfg.DataDir, "storage.db")); err != nil {
		return nil, err
	}
	s.handler = s.newHandler()
	_, used, free, n := s.store.stats()
	s.log.Info("storage peer opened", zap.String("data", cfg.DataDir), zap.Stringer("peer_id", s.key.ID),
		zap.Stringers("origin_ids", s.origins.list), zap.Int("shards", n), zap.Int64("used", used),
		zap.Int64("free", free), zap.Int64("capacity", cfg.Capacity))
	return s, nil
}

// fitCapacity checks the capacity against the free disk space (see
// fitCapacity), lowering a default one that does not fit.
func (s *Server) fitCapacity(explicit bool) error {
	free, err := diskFree(s.cfg.DataDir)
	if err != nil {
		s.log.Warn("cannot tell the free disk space; capacity not checked", zap.Error(err))
		return nil
	}
	_, used, _, _ := s.store.stats()
	fit, capped, err := fitCapacity(s.cfg.Capacity, explicit, free, used, s.cfg.DataDir)
	if err != nil {
		return err
	}
	if capped {
		s.log.Warn("the default capacity is more than the disk can hold; lowered to fit",
			zap.Int64("default", s.cfg.Capacity), zap.Int64("capacity", fit), zap.Int64("disk_free", free), zap.Int64("used", used))
		s.cfg.Capacity = fit
		s.store.mu.Lock()
		s.store.capacity = fit
		s.store.mu.Unlock()
	}
	return nil
}

// ID returns the peer's identity.
func (s *Server) ID() peer.ID { return s.key.ID }

// OriginID returns the peer ID of the first origin the peer takes orders
// from (OriginIDs).
func (s *Server) OriginID() peer.ID { return s.origins.list[0] }

// OriginIDs returns the peer IDs of the origins the peer takes orders
// from, as pinned.
func (s *Server) OriginIDs() []peer.ID { return append([]peer.ID(nil), s.origins.list...) }

// Handler returns the peer's HTTP API.
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the database. Shards on disk are always consistent, so
// Close has nothing else to flush.
func (s *Server) Close() error {
	if s.db == nil {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}
