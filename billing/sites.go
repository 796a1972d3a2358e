package billing

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
)

// A publisher's view of its sites: what the edges served for each of its
// keys, from the records billing accepted (grouped by publisher), in the
// last ended epoch and this calendar month, and per epoch over a window
// with the top paths. Every query is bounded by a window of epochs
// (records_publisher) and by the number of keys or rows it answers.

// sitesChunk is how many keys one query of AccountSites asks about.
const sitesChunk = 200

// AccountSites returns what was served for account's own key and for
// each key linked to it (an open link, or one that ended this month):
// bytes and requests in the last ended epoch and since the start of the
// UTC calendar month, and the name each key publishes.
func (l *Ledger) AccountSites(ctx context.Context, account string) (*billingapi.AccountSites, error) {
	if err := checkAccountID(account); err != nil {
		return nil, err
	}
	now := l.opts.now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	res := &billingapi.AccountSites{Account: account, LastEpoch: l.epochOf(now) - l.secs, EpochSeconds: l.secs, Month: month,
		Sites: []billingapi.SiteTraffic{{Key: account}}}
	// An epoch is counted in the month it starts in.
	monthEpoch := month.Unix()
	if r := monthEpoch % l.secs; r != 0 {
		monthEpoch += l.secs - r
	}
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT key FROM key_links WHERE account = ? AND (until_epoch = 0 OR until_epoch > ?)
		ORDER BY id LIMIT `+strconv.Itoa(billingapi.MaxAccountSites)), account, monthEpoch)
	if err != nil {
		return nil, fmt.Errorf("billing: sites of %s: %w", account, err)
	}
	seen := map[string]int{account: 0}
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			rows.Close()
			return nil, fmt.Errorf("billing: sites of %s: %w", account, err)
		}
		if _, dup := seen[key]; !dup { // linked, unlinked and linked again this month
			seen[key] = len(res.Sites)
			res.Sites = append(res.Sites, billingapi.SiteTraffic{Key: key, Linked: true})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billing: sites of %s: %w", account, err)
	}
	keys := make([]string, len(res.Sites))
	for i, s := range res.Sites {
		keys[i] = s.Key
	}
	since := min(monthEpoch, res.LastEpoch)
	for start := 0; start < len(keys); start += sitesChunk {
		chunk := keys[start:min(start+sitesChunk, len(keys))]
		args := []any{res.LastEpoch, res.LastEpoch, monthEpoch, monthEpoch}
		for _, k := range chunk {
			args = append(args, k)
		}
		args = append(args, since)
		rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT publisher,
				CAST(sum(CASE WHEN epoch = ? THEN bytes ELSE 0 END) AS BIGINT), CAST(sum(CASE WHEN epoch = ? THEN 1 ELSE 0 END) AS BIGINT),
				CAST(sum(CASE WHEN epoch >= ? THEN bytes ELSE 0 END) AS BIGINT), CAST(sum(CASE WHEN epoch >= ? THEN 1 ELSE 0 END) AS BIGINT)
			FROM records WHERE publisher IN (?`+strings.Repeat(", ?", len(chunk)-1)+`) AND epoch >= ? GROUP BY publisher`), args...)
		if err != nil {
			return nil, fmt.Errorf("billing: sites of %s: %w", account, err)
		}
		for rows.Next() {
			var (
				key string
				t   [4]int64
			)
			if err := rows.Scan(&key, &t[0], &t[1], &t[2], &t[3]); err != nil {
				rows.Close()
				return nil, fmt.Errorf("billing: sites of %s: %w", account, err)
			}
			s := &res.Sites[seen[key]]
			s.LastEpoch = billingapi.Traffic{Bytes: t[0], Requests: t[1]}
			s.Month = billingapi.Traffic{Bytes: t[2], Requests: t[3]}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("billing: sites of %s: %w", account, err)
		}
	}
	names, err := l.siteNames(ctx, keys, since)
	if err != nil {
		return nil, err
	}
	for i := range res.Sites {
		res.Sites[i].Name = names[res.Sites[i].Key]
	}
	return res, nil
}

// siteNames returns the human name each of keys publishes: from the
// origin's billing log when the Content knows it (SiteNames), else the
// latest name the edges' records gave for the key since the epoch since
// (the demand keys of edge_keys).
func (l *Ledger) siteNames(ctx context.Context, keys []string, since int64) (map[string]string, error) {
	out := map[string]string{}
	if sn, ok := l.content.(SiteNames); ok {
		out = sn.SiteNames(ctx, keys)
	}
	var unknown []string
	for _, k := range keys {
		if out[k] == "" {
			unknown = append(unknown, k)
		}
	}
	for start := 0; start < len(unknown); start += sitesChunk {
		chunk := unknown[start:min(start+sitesChunk, len(unknown))]
		args := make([]any, 0, len(chunk)+1)
		for _, k := range chunk {
			args = append(args, k)
		}
		args = append(args, since)
		// One row per (key, name): a key publishes one name.
		rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT publisher, dkey, max(epoch) FROM edge_keys
			WHERE publisher IN (?`+strings.Repeat(", ?", len(chunk)-1)+`) AND epoch >= ? AND dkey LIKE 'name:%'
			GROUP BY publisher, dkey LIMIT `+strconv.Itoa(4*sitesChunk)), args...)
		if err != nil {
			return nil, fmt.Errorf("billing: site names: %w", err)
		}
		latest := map[string]int64{}
		for rows.Next() {
			var (
				key, dkey string
				epoch     int64
			)
			if err := rows.Scan(&key, &dkey, &epoch); err != nil {
				rows.Close()
				return nil, fmt.Errorf("billing: site names: %w", err)
			}
			if e, ok := latest[key]; !ok || epoch > e {
				latest[key] = epoch
				out[key] = strings.TrimPrefix(dkey, "name:")
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("billing: site names: %w", err)
		}
	}
	return out, nil
}

// ServedHistory returns what was served for key in the epochs starting in
// [from, to) (zero: the last DefaultServedWindow up to now), per epoch or,
// past MaxServedPoints epochs, per step of several, and its top paths by
// requests and by bytes. The window is widened to whole epochs and may
// span at most MaxServedWindow.
func (l *Ledger) ServedHistory(ctx context.Context, key string, from, to time.Time) (*billingapi.ServedHistory, error) {
	if len(key) > identity.MaxSignerSize {
		return nil, reject(billingapi.ReasonMalformed, "publisher key over %d bytes", identity.MaxSignerSize)
	}
	if _, err := peer.Decode(key); err != nil {
		return nil, reject(billingapi.ReasonMalformed, "publisher %q is not a peer ID: %v", key, err)
	}
	if to.IsZero() {
		to = l.opts.now()
	}
	if from.IsZero() {
		from = to.Add(-billingapi.DefaultServedWindow)
	}
	if !from.Before(to) || to.Sub(from) > billingapi.MaxServedWindow {
		return nil, reject(billingapi.ReasonMalformed, "window %d to %d: want from before to, at most %s apart",
			from.Unix(), to.Unix(), billingapi.MaxServedWindow)
	}
	lo, hi := l.epochOf(from), l.epochOf(to.Add(-time.Second))+l.secs
	epochs := (hi - lo) / l.secs
	step := l.secs * ((epochs + billingapi.MaxServedPoints - 1) / billingapi.MaxServedPoints)
	res := &billingapi.ServedHistory{Publisher: key, From: lo, To: hi, Step: step, Points: []billingapi.EpochTraffic{},
		TopByRequests: []billingapi.PathTraffic{}, TopByBytes: []billingapi.PathTraffic{}}
	rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT CAST(? AS BIGINT) + (epoch - ?) / ? * ?, CAST(sum(bytes) AS BIGINT), count(*) FROM records
		WHERE publisher = ? AND epoch >= ? AND epoch < ? GROUP BY 1 ORDER BY 1 LIMIT `+strconv.Itoa(billingapi.MaxServedPoints+1)),
		lo, lo, step, step, key, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("billing: served of %s: %w", key, err)
	}
	for rows.Next() {
		var p billingapi.EpochTraffic
		if err := rows.Scan(&p.Epoch, &p.Bytes, &p.Requests); err != nil {
			rows.Close()
			return nil, fmt.Errorf("billing: served of %s: %w", key, err)
		}
		res.Points = append(res.Points, p)
		res.Total.Bytes += p.Bytes
		res.Total.Requests += p.Requests
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billing: served of %s: %w", key, err)
	}
	for _, top := range []struct {
		order string
		out   *[]billingapi.PathTraffic
	}{{"2 DESC, 3 DESC", &res.TopByRequests}, {"3 DESC, 2 DESC", &res.TopByBytes}} {
		rows, err := l.db.QueryContext(ctx, l.db.q(`SELECT path, count(*), CAST(sum(bytes) AS BIGINT) FROM records
			WHERE publisher = ? AND epoch >= ? AND epoch < ? AND path <> '' GROUP BY path
			ORDER BY `+top.order+`, path LIMIT `+strconv.Itoa(billingapi.TopPaths)), key, lo, hi)
		if err != nil {
			return nil, fmt.Errorf("billing: top paths of %s: %w", key, err)
		}
		for rows.Next() {
			var p billingapi.PathTraffic
			if err := rows.Scan(&p.Path, &p.Requests, &p.Bytes); err != nil {
				rows.Close()
				return nil, fmt.Errorf("billing: top paths of %s: %w", key, err)
			}
			*top.out = append(*top.out, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("billing: top paths of %s: %w", key, err)
		}
	}
	return res, nil
}
