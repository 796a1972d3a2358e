package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/origin/durability"
	"go.uber.org/zap"
)

// Several origins may share one database, each with its own key. The set
// of their peer IDs (Config.OriginIDs) is what verifiers pin: storage
// peers take orders, and edges and billing take manifests and log pages,
// signed by any of them. Each origin records itself in table origins
// (origins heartbeat), with the settings that must match across them;
// one that finds another live origin set up otherwise says so.

// originsHeartbeat is how often an origin records itself in table origins;
// one not seen for three is no longer live.
const originsHeartbeat = 10 * time.Second

// OriginIDs returns the peer IDs of the origins verifiers pin: Config's,
// or this origin's alone.
func (o *Origin) OriginIDs() []peer.ID { return slices.Clone(o.originIDs) }

// sharedSettings are the settings every origin sharing a database must
// have alike: who may upload and how much, whether billing is asked, how
// content is striped, and the origins verifiers pin.
type sharedSettings struct {
	Publishers     []string                 `json:"publishers"`
	PublisherQuota int64                    `json:"publisher_quota"`
	Funds          bool                     `json:"funds"`
	Stripe         *durability.StripeConfig `json:"stripe"`
	OriginIDs      []string                 `json:"origin_ids"`
}

// settings returns the origin's sharedSettings as JSON.
func (o *Origin) settings() string {
	s := sharedSettings{PublisherQuota: o.cfg.PublisherQuota, Funds: o.cfg.Funds != nil, Stripe: o.storage.StripeConfig()}
	for _, p := range o.cfg.Publishers {
		s.Publishers = append(s.Publishers, p.String())
	}
	for _, p := range o.originIDs {
		s.OriginIDs = append(s.OriginIDs, p.String())
	}
	slices.Sort(s.Publishers)
	slices.Sort(s.OriginIDs)
	b, _ := json.Marshal(s)
	return string(b)
}

// heartbeatOrigins records the origin in table origins every
// originsHeartbeat until ctx ends, and warns of live origins set up
// otherwise, once per change.
func (o *Origin) heartbeatOrigins(ctx context.Context) {
	started := time.Now()
	mine := o.settings()
	warned := map[string]string{}
	tick.NowAndEvery(ctx, originsHeartbeat, func(ctx context.Context) {
		others, err := o.recordOrigin(ctx, started, mine)
		if err != nil {
			if ctx.Err() == nil {
				o.log.Warn("recording the origin failed", zap.Error(err))
			}
			return
		}
		for id, theirs := range others {
			if theirs != mine && warned[id] != theirs {
				o.log.Warn("another origin sharing the database is set up otherwise; publishers, quotas, billing, striping and origin IDs must match",
					zap.String("origin", id), zap.String("theirs", theirs), zap.String("ours", mine))
			}
		}
		warned = others
	})
}

// recordOrigin upserts the origin's row and returns the settings of the
// other live origins, by peer ID.
func (o *Origin) recordOrigin(ctx context.Context, started time.Time, settings string) (map[string]string, error) {
	now, err := o.db.Now(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := o.db.ExecContext(ctx, `INSERT INTO origins (peer_id, url, config, started_at, last_seen) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (peer_id) DO UPDATE SET url = excluded.url, config = excluded.config, started_at = excluded.started_at,
			last_seen = excluded.last_seen`,
		o.key.ID.String(), o.cfg.URL, settings, started.UnixNano(), now.UnixNano()); err != nil {
		return nil, fmt.Errorf("origin: record origin: %w", err)
	}
	rows, err := o.db.QueryContext(ctx, `SELECT peer_id, config FROM origins WHERE peer_id != ? AND last_seen >= ?`,
		o.key.ID.String(), now.Add(-3*originsHeartbeat).UnixNano())
	if err != nil {
		return nil, fmt.Errorf("origin: list origins: %w", err)
	}
	defer rows.Close()
	others := map[string]string{}
	for rows.Next() {
		var id, config string
		if err := rows.Scan(&id, &config); err != nil {
			return nil, fmt.Errorf("origin: list origins: %w", err)
		}
		others[id] = config
	}
	return others, rows.Err()
}

// health is the answer to GET /healthz.
type health struct {
	Status string `json:"status"`
	// PeerID is this origin's.
	PeerID string `json:"peer_id"`
	// OriginIDs are the origins verifiers pin (OriginIDs).
	OriginIDs []string `json:"origin_ids"`
}

func (o *Origin) serveHealth(w http.ResponseWriter, r *http.Request) {
	if err := o.db.PingContext(r.Context()); err != nil {
		httpkit.WriteError(w, err)
		return
	}
	h := health{Status: "ok", PeerID: o.key.ID.String()}
	for _, id := range o.originIDs {
		h.OriginIDs = append(h.OriginIDs, id.String())
	}
	httpkit.WriteJSON(w, http.StatusOK, h)
}
