package durability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// Errors of a heartbeat refused, each wrapped with the details.
var (
	// ErrBadHeartbeat marks a heartbeat that does not verify, is not the
	// signer's own, is stale or from the future, or does not add up.
	ErrBadHeartbeat error = httpkit.Error(http.StatusBadRequest, errors.New("bad heartbeat"))
	// ErrReplayedHeartbeat marks a heartbeat not newer than the last one
	// accepted from its peer.
	ErrReplayedHeartbeat error = httpkit.Error(http.StatusConflict, errors.New("replayed heartbeat"))
)

// heartbeatSkew is how far a heartbeat's timestamp may be from the origin's
// clock; older ones are stale (or replayed) and refused.
const heartbeatSkew = 2 * time.Minute

// Heartbeat accepts a storage peer's signed heartbeat: the signature must
// verify, the peer must be the signer, the timestamp must be fresh and
// newer than the last one accepted (no replays), the address an http(s) URL.
// The first heartbeat registers the peer. It returns ErrBadHeartbeat or
// ErrReplayedHeartbeat, wrapped, for a heartbeat it refuses.
func (kp *Keeper) Heartbeat(ctx context.Context, env *identity.Envelope) error {
	var hb storageapi.Heartbeat
	signer, err := env.Open(storageapi.TypeHeartbeat, &hb)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadHeartbeat, err)
	}
	if hb.Peer != signer.String() {
		return fmt.Errorf("%w: for %s, signed by %s", ErrBadHeartbeat, hb.Peer, signer)
	}
	now := kp.now()
	if d := now.Sub(hb.Time); d > heartbeatSkew || d < -heartbeatSkew {
		return fmt.Errorf("%w: from %s, stale or from the future (%s off)", ErrBadHeartbeat, signer, d.Round(time.Second))
	}
	u, err := url.Parse(hb.Addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: address %q is not an http(s) URL", ErrBadHeartbeat, hb.Addr)
	}
	if hb.Capacity < 0 || hb.Free < 0 || hb.Free > hb.Capacity || hb.Shards < 0 {
		return fmt.Errorf("%w: capacity %d, free %d, shards %d do not add up", ErrBadHeartbeat, hb.Capacity, hb.Free, hb.Shards)
	}
	var lat, lon any
	region := ""
	if hb.Location != nil {
		lat, lon, region = hb.Location.Lat, hb.Location.Lon, hb.Location.Region
	}
	res, err := kp.db.ExecContext(ctx, `INSERT INTO peers (peer_id, addr, capacity, free, shards, lat, lon, region, hb_time, last_seen, first_seen)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (peer_id) DO UPDATE SET addr = excluded.addr, capacity = excluded.capacity, free = excluded.free,
			shards = excluded.shards, lat = excluded.lat, lon = excluded.lon, region = excluded.region,
			hb_time = excluded.hb_time, last_seen = excluded.last_seen
		WHERE excluded.hb_time > peers.hb_time`,
		signer.String(), hb.Addr, hb.Capacity, hb.Free, hb.Shards, lat, lon, region, hb.Time.UnixNano(), now.UnixNano(), now.UnixNano())
	if err != nil {
		return fmt.Errorf("durability: record heartbeat: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: from %s, not newer than the last one", ErrReplayedHeartbeat, signer)
	}
	kp.setAddr(signer, hb.Addr)
	kp.log.Debug("heartbeat", zap.Stringer("peer", signer), zap.String("addr", hb.Addr), zap.Int64("free", hb.Free))
	return nil
}

// Peers lists the storage peers, healthiest and emptiest first.
func (kp *Keeper) Peers(ctx context.Context) ([]originapi.PeerInfo, error) {
	rows, err := kp.db.QueryContext(ctx, `SELECT p.peer_id, p.addr, p.capacity, p.free, p.shards, p.lat, p.lon, p.region, p.last_seen,
			(SELECT count(*) FROM shards s WHERE s.peer_id = p.peer_id),
			(SELECT count(*) FROM audits a WHERE a.peer_id = p.peer_id AND a.ok = 1),
			(SELECT count(*) FROM audits a WHERE a.peer_id = p.peer_id AND a.ok = 0),
			(SELECT count(*) FROM flags f WHERE f.peer_id = p.peer_id)
		FROM peers p ORDER BY p.last_seen DESC`)
	if err != nil {
		return nil, fmt.Errorf("durability: list peers: %w", err)
	}
	defer rows.Close()
	now := kp.now()
	out := []originapi.PeerInfo{}
	for rows.Next() {
		var pi originapi.PeerInfo
		var lat, lon *float64
		var region string
		var seen int64
		if err := rows.Scan(&pi.ID, &pi.Addr, &pi.Capacity, &pi.Free, &pi.Shards, &lat, &lon, &region, &seen,
			&pi.Placed, &pi.AuditsOK, &pi.AuditsFailed, &pi.Flags); err != nil {
			return nil, fmt.Errorf("durability: list peers: %w", err)
		}
		if lat != nil && lon != nil {
			pi.Location = &storageapi.Location{Lat: *lat, Lon: *lon, Region: region}
		}
		pi.LastSeen = time.Unix(0, seen).UTC()
		pi.Healthy = now.Sub(pi.LastSeen) <= 3*kp.cfg.HeartbeatInterval
		out = append(out, pi)
	}
	return out, rows.Err()
}

// peerAddr returns the address a peer last announced.
func (kp *Keeper) peerAddr(ctx context.Context, p peer.ID) (string, error) {
	var addr string
	if err := kp.db.QueryRowContext(ctx, `SELECT addr FROM peers WHERE peer_id = ?`, p.String()).Scan(&addr); err != nil {
		return "", fmt.Errorf("durability: no address for peer %s: %w", p, err)
	}
	return addr, nil
}
