package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/internal/httpkit"
	"go.uber.org/zap"
)

// originSet is the set of origins a peer takes orders from: each origin
// of a network signs with its own key.
type originSet struct {
	list []peer.ID // in the order configured, learned or pinned
	has  map[peer.ID]bool
}

func newOriginSet(ids ...peer.ID) originSet {
	s := originSet{has: map[peer.ID]bool{}}
	for _, id := range ids {
		if id != "" && !s.has[id] {
			s.has[id] = true
			s.list = append(s.list, id)
		}
	}
	return s
}

func (s originSet) empty() bool { return len(s.list) == 0 }

// equal reports whether s and o hold the same IDs.
func (s originSet) equal(o originSet) bool {
	return len(s.list) == len(o.list) && !slices.ContainsFunc(o.list, func(id peer.ID) bool { return !s.has[id] })
}

// intersects reports whether s and o share an ID.
func (s originSet) intersects(o originSet) bool {
	return slices.ContainsFunc(o.list, func(id peer.ID) bool { return s.has[id] })
}

func (s originSet) String() string {
	ids := make([]string, len(s.list))
	for i, id := range s.list {
		ids[i] = id.String()
	}
	return strings.Join(ids, ",")
}

// pinOrigins returns the origins the peer takes orders from, pinned in
// DataDir/origin-id (one ID per line): the configured ones (cfg.OriginIDs,
// cfg.OriginID), else those pinned, else those GET {Origin}/healthz
// reports (origin_ids, or its peer_id alone). The first set is pinned; the
// shards a peer holds were written for those origins, so a later set must
// share an ID with the pinned one: a configured set that does replaces
// the pin (an origin's key rotated: the new key was added to the set, then
// the old one dropped), one that does not is refused. A set the origin
// reports never changes the pin (nothing signs it); one that shares no ID
// with the pin is refused.
func (s *Server) pinOrigins(ctx context.Context) (originSet, error) {
	path := filepath.Join(s.cfg.DataDir, "origin-id")
	pinned, err := readPinned(path)
	if err != nil {
		return originSet{}, err
	}
	configured := newOriginSet(append([]peer.ID{s.cfg.OriginID}, s.cfg.OriginIDs...)...)
	if !configured.empty() {
		switch {
		case pinned.equal(configured):
			return pinned, nil
		case !pinned.empty() && !pinned.intersects(configured):
			return originSet{}, fmt.Errorf("storage: the configured origins %s share no ID with those this peer's data (%s) belongs to, %s; use another data directory to serve other origins",
				configured, s.cfg.DataDir, pinned)
		}
		if err := writePinned(path, configured); err != nil {
			return originSet{}, err
		}
		if pinned.empty() {
			s.log.Info("pinned the origins", zap.Stringer("origin_ids", configured), zap.String("from", "the configured origin IDs"))
		} else {
			s.log.Info("pinned origins changed", zap.Stringer("from", pinned), zap.Stringer("to", configured))
		}
		return configured, nil
	}
	var learned originSet
	if pinned.empty() {
		learned, err = s.awaitOriginIDs(ctx) // nothing to go on without the origin: wait for it
	} else {
		learned, err = fetchOriginIDs(ctx, s.client, s.cfg.Origin)
	}
	switch {
	case err != nil && pinned.empty():
		return originSet{}, fmt.Errorf("storage: learn the origins' peer IDs: %w", err)
	case err != nil:
		s.log.Warn("cannot reach the origin to check its peer IDs; using the pinned ones",
			zap.Stringer("origin_ids", pinned), zap.Error(err))
		return pinned, nil
	case pinned.empty():
		if err := writePinned(path, learned); err != nil {
			return originSet{}, err
		}
		s.log.Info("pinned the origins", zap.Stringer("origin_ids", learned), zap.String("from", "the origin at "+s.cfg.Origin))
		return learned, nil
	case !pinned.intersects(learned):
		return originSet{}, fmt.Errorf("storage: the origin at %s has peer IDs %s, but this peer's data (%s) belongs to origins %s; use another data directory to serve another origin",
			s.cfg.Origin, learned, s.cfg.DataDir, pinned)
	case !pinned.equal(learned):
		s.log.Warn("the origin reports other origins than those pinned; keeping the pinned ones (configure the origin IDs to change them)",
			zap.Stringer("pinned", pinned), zap.Stringer("reported", learned))
	}
	return pinned, nil
}

// awaitOriginIDs asks the origin for its peer IDs until it answers,
// waiting between tries as s.cfg.originBackoff says and logging each
// retry; it gives up when ctx is done, with ctx's error and the last one.
func (s *Server) awaitOriginIDs(ctx context.Context) (originSet, error) {
	for n := 0; ; n++ {
		ids, err := fetchOriginIDs(ctx, s.client, s.cfg.Origin)
		if err == nil {
			if n > 0 {
				s.log.Info("origin reachable", zap.String("origin", s.cfg.Origin), zap.Int("tries", n+1))
			}
			return ids, nil
		}
		if ctx.Err() != nil {
			return originSet{}, fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		}
		d := s.cfg.originBackoff.delay(n, jitter)
		s.log.Warn("origin unreachable, retrying in "+d.Round(time.Millisecond).String(),
			zap.String("origin", s.cfg.Origin), zap.Int("try", n+1), zap.Duration("retry_in", d), zap.Error(err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return originSet{}, fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// readPinned reads the origins pinned at path, one ID per line (an empty
// set if none are).
func readPinned(path string) (originSet, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return originSet{}, nil
	}
	if err != nil {
		return originSet{}, fmt.Errorf("storage: read pinned origins: %w", err)
	}
	var ids []peer.ID
	for _, line := range strings.Fields(string(b)) {
		id, err := peer.Decode(line)
		if err != nil {
			return originSet{}, fmt.Errorf("storage: pinned origin in %s: %w", path, err)
		}
		ids = append(ids, id)
	}
	return newOriginSet(ids...), nil
}

// writePinned writes set to path durably, one ID per line: a temp file,
// synced, renamed.
func writePinned(path string, set originSet) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".origin-id-*")
	if err != nil {
		return fmt.Errorf("storage: pin origins: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op after the rename
	_, err = f.WriteString(strings.ReplaceAll(set.String(), ",", "\n") + "\n")
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
		return fmt.Errorf("storage: pin origins: %w", err)
	}
	return nil
}

// fetchOriginIDs asks the origin at base for the origins' peer IDs (GET
// /healthz): origin_ids, or, from an origin that lists none, its peer_id.
func fetchOriginIDs(ctx context.Context, client *http.Client, base string) (originSet, error) {
	ctx, cancel := context.WithTimeout(ctx, originTimeout)
	defer cancel()
	var h struct {
		PeerID    string   `json:"peer_id"`
		OriginIDs []string `json:"origin_ids"`
	}
	if err := httpkit.GetJSON(ctx, client, base+"/healthz", 64<<10, &h); err != nil {
		return originSet{}, err
	}
	strs := h.OriginIDs
	if len(strs) == 0 {
		strs = []string{h.PeerID}
	}
	ids := make([]peer.ID, len(strs))
	for i, str := range strs {
		id, err := peer.Decode(str)
		if err != nil {
			return originSet{}, fmt.Errorf("GET %s/healthz: origin ID %q: %w", base, str, err)
		}
		ids[i] = id
	}
	return newOriginSet(ids...), nil
}
