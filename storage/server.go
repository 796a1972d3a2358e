package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"go.uber.org/zap"
)

// originTimeout bounds each request the peer makes to the origin.
const originTimeout = 10 * time.Second

// Server is a storage peer: it keeps shards on the orders of its origin
// and serves ranges of them on readers' signed read orders, over HTTP by
// Handler. Run announces it to the origin.
type Server struct {
	cfg      Config
	key      *identity.Key
	originID peer.ID
	log      *zap.Logger
	metrics  *metrics
	store    *store
	db       *sql.DB
	handler  http.Handler
	client   *http.Client // to the origin

	// Testing.
	now func() time.Time
}

// New opens (or creates) the storage peer kept in cfg.DataDir. Temp files
// of uploads that were cut short are removed and the space in use is
// recounted from the shards on disk. When cfg.OriginID is unset and no
// origin is pinned yet, New asks cfg.Origin for its peer ID; while the
// origin cannot be reached it retries, with capped and jittered backoff,
// logging "origin unreachable, retrying in …" each time, until ctx is done.
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
	if s.originID, err = s.pinOrigin(ctx); err != nil {
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
		zap.Stringer("origin_id", s.originID), zap.Int("shards", n), zap.Int64("used", used),
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

// OriginID returns the peer ID of the origin the peer takes orders from.
func (s *Server) OriginID() peer.ID { return s.originID }

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

// pinOrigin returns the origin's peer ID: cfg.OriginID, or the one pinned
// in DataDir/origin-id, or the one GET {Origin}/healthz reports, checking
// that they agree. The first ID learned is pinned; the shards a peer holds
// were written for one origin, so it never changes origin.
func (s *Server) pinOrigin(ctx context.Context) (peer.ID, error) {
	path := filepath.Join(s.cfg.DataDir, "origin-id")
	pinned, err := readPinned(path)
	if err != nil {
		return "", err
	}
	want, source := s.cfg.OriginID, "the configured OriginID"
	if want == "" && s.cfg.Origin != "" {
		var got peer.ID
		if pinned == "" {
			// Nothing to go on without the origin: wait for it.
			got, err = s.awaitOriginID(ctx)
		} else {
			got, err = fetchOriginID(ctx, s.client, s.cfg.Origin)
		}
		switch {
		case err != nil && pinned == "":
			return "", fmt.Errorf("storage: learn the origin's peer ID: %w", err)
		case err != nil:
			s.log.Warn("cannot reach the origin to check its peer ID; using the pinned one",
				zap.Stringer("origin_id", pinned), zap.Error(err))
		default:
			want, source = got, "the origin at "+s.cfg.Origin
		}
	}
	switch {
	case pinned != "" && want != "" && want != pinned:
		return "", fmt.Errorf("storage: %s has peer ID %s, but this peer's data (%s) belongs to origin %s; use another data directory to serve another origin",
			source, want, s.cfg.DataDir, pinned)
	case pinned != "":
		return pinned, nil
	}
	if err := writePinned(path, want); err != nil {
		return "", err
	}
	s.log.Info("pinned the origin", zap.Stringer("origin_id", want), zap.String("from", source))
	return want, nil
}

// awaitOriginID asks the origin for its peer ID until it answers, waiting
// between tries as s.cfg.originBackoff says and logging each retry; it
// gives up when ctx is done, with ctx's error and the last one.
func (s *Server) awaitOriginID(ctx context.Context) (peer.ID, error) {
	for n := 0; ; n++ {
		id, err := fetchOriginID(ctx, s.client, s.cfg.Origin)
		if err == nil {
			if n > 0 {
				s.log.Info("origin reachable", zap.String("origin", s.cfg.Origin), zap.Int("tries", n+1))
			}
			return id, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		}
		d := s.cfg.originBackoff.delay(n, jitter)
		s.log.Warn("origin unreachable, retrying in "+d.Round(time.Millisecond).String(),
			zap.String("origin", s.cfg.Origin), zap.Int("try", n+1), zap.Duration("retry_in", d), zap.Error(err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// readPinned reads the origin ID pinned at path, or "" if none is.
func readPinned(path string) (peer.ID, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("storage: read pinned origin: %w", err)
	}
	id, err := peer.Decode(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("storage: pinned origin in %s: %w", path, err)
	}
	return id, nil
}

// writePinned writes id to path durably: a temp file, synced, renamed.
func writePinned(path string, id peer.ID) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".origin-id-*")
	if err != nil {
		return fmt.Errorf("storage: pin origin: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op after the rename
	_, err = f.WriteString(id.String() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("storage: pin origin: %w", err)
	}
	return nil
}

// fetchOriginID asks the origin at base for its peer ID (GET /healthz).
func fetchOriginID(ctx context.Context, client *http.Client, base string) (peer.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, originTimeout)
	defer cancel()
	var h struct {
		PeerID string `json:"peer_id"`
	}
	if err := httpkit.GetJSON(ctx, client, base+"/healthz", 64<<10, &h); err != nil {
		return "", err
	}
	id, err := peer.Decode(h.PeerID)
	if err != nil {
		return "", fmt.Errorf("GET %s/healthz: peer_id %q: %w", base, h.PeerID, err)
	}
	return id, nil
}
