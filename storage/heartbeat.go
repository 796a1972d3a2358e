package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// HeartbeatPath is where an origin takes heartbeats: POST, body a JSON
// identity.Envelope of TypeHeartbeat signed by the peer.
const HeartbeatPath = "/api/v1/peers/heartbeat"

// Run announces the peer to its origin: a heartbeat at once, then one every
// HeartbeatInterval, until ctx is done. A failed heartbeat is logged and
// counted, and the next one is sent all the same. Run returns nil when ctx
// is done, and an error at once if Config.Origin or Config.PublicAddr is
// unset.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Origin == "" {
		return errors.New("storage: run: no Origin to send heartbeats to")
	}
	if s.cfg.PublicAddr == "" {
		return errors.New("storage: run: no PublicAddr to announce")
	}
	failing := false
	tick.NowAndEvery(ctx, s.cfg.HeartbeatInterval, func(ctx context.Context) {
		err := s.heartbeat(ctx)
		switch {
		case ctx.Err() != nil: // stopping: not a failure
		case err != nil:
			s.metrics.heartbeats.WithLabelValues("error").Inc()
			s.log.Warn("heartbeat failed", zap.String("origin", s.pool.Current()), zap.Error(err))
			failing = true
		default:
			s.metrics.heartbeats.WithLabelValues("ok").Inc()
			if failing {
				s.log.Info("heartbeats reach the origin again", zap.String("origin", s.pool.Current()))
			}
			failing = false
		}
	})
	return nil
}

// heartbeat signs and sends one heartbeat, to the next origin when one
// cannot take it (signed anew: an origin refuses a heartbeat no newer
// than the last it stored).
func (s *Server) heartbeat(ctx context.Context) error {
	return s.pool.Do(ctx, s.heartbeatTo)
}

// heartbeatTo signs and sends one heartbeat to the origin at base.
func (s *Server) heartbeatTo(ctx context.Context, base string) error {
	capacity, _, free, n := s.store.stats()
	env, err := s.key.Sign(storageapi.TypeHeartbeat, storageapi.Heartbeat{
		Peer:     s.key.ID.String(),
		Addr:     s.cfg.PublicAddr,
		Capacity: capacity,
		Free:     free,
		Shards:   n,
		Location: s.cfg.Location,
		Time:     s.now().UTC(),
	})
	if err != nil {
		return fmt.Errorf("storage: heartbeat: %w", err)
	}
	body, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("storage: heartbeat: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, originTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+HeartbeatPath, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("storage: heartbeat: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if _, err := httpkit.Do(s.client, req, 4<<10); err != nil {
		return fmt.Errorf("storage: heartbeat: %w", err)
	}
	return nil
}
