package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/valuestore"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

// nameFetchTimeout bounds one fetch of a name (an IPNS record, a site's
// DNSLink) from the origin. Names are small; an origin that takes longer
// is treated as down, and the edge answers from what it kept.
const nameFetchTimeout = 5 * time.Second

// keptNames bounds how many names' last answers an edge keeps.
const keptNames = 4096

// staleNameTTL is how long a kept DNSLink answer, served while the origin
// cannot give a fresh one, may be cached before the origin is asked again.
const staleNameTTL = 30 * time.Second

// nameRecords is the edge's IPNS value store (a routing.ValueStore, which
// boxo's name system and gateway read records from). It fetches records
// from the origin's Trustless Gateway, checks each against its name's key
// and keeps the best valid record seen for each name, so that:
//
//   - the origin, or anything between it and the edge, cannot roll a name
//     back: a record older (lower sequence) than the kept one is refused
//     while the kept one is valid, and the kept one is served;
//   - an origin outage does not take named sites down: while the origin
//     cannot answer (down, slow, an error, not found), the kept record is
//     served until the end of its own validity, which its key signed.
type nameRecords struct {
	pool      *originapi.Pool // the origins, with failover
	http      *http.Client
	log       *zap.Logger
	fallbacks *prometheus.CounterVec // kind, reason
	kept      *lru.Cache[string, []byte]
	disk      answerDisk // nil: kept in memory only
}

// answerDisk keeps the origin's last answers across restarts (DiskCache):
// names, manifests, the storage peers' addresses.
type answerDisk interface {
	Kept(key string) ([]byte, bool)
	Keep(key string, value []byte) error
}

func newNameRecords(pool *originapi.Pool, client *http.Client, log *zap.Logger, fallbacks *prometheus.CounterVec,
	kept *lru.Cache[string, []byte], disk answerDisk) *nameRecords {
	return &nameRecords{pool: pool, http: client, log: log, fallbacks: fallbacks, kept: kept, disk: disk}
}

// keep makes rec the kept record for key, on disk too.
func (n *nameRecords) keep(key string, rec []byte) {
	n.kept.Add(key, rec)
	if n.disk != nil {
		if err := n.disk.Keep("ipns "+key, rec); err != nil {
			n.log.Warn("keep IPNS record on disk", zap.Error(err))
		}
	}
}

// PutValue is not for edges: names are published at the origin.
func (n *nameRecords) PutValue(context.Context, string, []byte, ...routing.Option) error {
	return routing.ErrNotSupported
}

// SearchValue sends GetValue's record, if any, on the returned channel.
func (n *nameRecords) SearchValue(ctx context.Context, key string, opts ...routing.Option) (<-chan []byte, error) {
	return valuestore.Search(ctx, n, key, opts...)
}

// GetValue returns the best valid record for the IPNS routing key
// (/ipns/{binary name}): the origin's, unless the kept one is better or
// the origin cannot answer.
func (n *nameRecords) GetValue(ctx context.Context, key string, _ ...routing.Option) ([]byte, error) {
	if !strings.HasPrefix(key, "/ipns/") {
		return nil, routing.ErrNotSupported
	}
	name, err := ipns.NameFromRoutingKey([]byte(key))
	if err != nil {
		return nil, fmt.Errorf("edge: IPNS routing key: %w", err)
	}
	fetched, ferr := n.fetch(ctx, name)
	kept, ok := n.kept.Get(key)
	if !ok && n.disk != nil {
		kept, ok = n.disk.Kept("ipns " + key) // kept before a restart
	}
	if ok && validRecord(kept, name) != nil {
		n.kept.Remove(key) // its validity ended: nothing to fall back on
		ok = false
	}
	switch {
	case ferr == nil && !ok:
		n.keep(key, fetched)
		return fetched, nil
	case ferr == nil:
		best, err := ipns.Validator{}.Select(key, [][]byte{kept, fetched})
		if err != nil || best == 1 || bytes.Equal(kept, fetched) {
			n.keep(key, fetched)
			return fetched, nil
		}
		n.log.Warn("origin sent an older IPNS record than one already seen; serving the newer",
			zap.Stringer("name", name))
		n.fallbacks.WithLabelValues("ipns", "rollback").Inc()
		return kept, nil
	case ok && ctx.Err() == nil:
		reason := "origin_unavailable"
		if errors.Is(ferr, routing.ErrNotFound) {
			reason = "origin_not_found"
		}
		n.log.Warn("origin cannot give an IPNS record; serving the last valid one",
			zap.Stringer("name", name), zap.Error(ferr))
		n.fallbacks.WithLabelValues("ipns", reason).Inc()
		n.kept.Add(key, kept)
		return kept, nil
	default:
		return nil, fmt.Errorf("edge: %w", clientError(n.log, "IPNS record of "+name.String(), ferr))
	}
}

// fetch gets name's record from the origin and checks it.
func (n *nameRecords) fetch(ctx context.Context, name ipns.Name) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, nameFetchTimeout)
	defer cancel()
	var raw []byte
	err := n.pool.Do(ctx, func(ctx context.Context, base string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ipns/"+name.String(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/vnd.ipfs.ipns-record")
		raw, err = httpkit.Do(n.http, req, int64(ipns.MaxRecordSize))
		return err
	})
	var re *httpkit.ResponseError
	switch {
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		return nil, fmt.Errorf("IPNS record of %s: %w", name, routing.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("IPNS record of %s: %w", name, err)
	}
	if err := validRecord(raw, name); err != nil {
		return nil, fmt.Errorf("origin sent a bad IPNS record for %s: %w", name, err)
	}
	return raw, nil
}

// validRecord checks that raw is a record signed by name's key and still
// within its validity.
func validRecord(raw []byte, name ipns.Name) error {
	rec, err := ipns.UnmarshalRecord(raw)
	if err != nil {
		return err
	}
	return ipns.ValidateWithName(rec, name)
}

// dnsLink is a site's DNSLink answer, as the origin last gave it.
type dnsLink struct {
	value string
	ttl   time.Duration
}
