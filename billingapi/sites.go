package billingapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// What a publisher sees of its sites: the bytes and requests billing
// accepted from the edges' batches for each of its keys (the records of
// the batches, before settlement's checks, which may pay less). A request
// is one accepted record: a response with a body, of status 2xx.

// Limits of the sites and served answers.
const (
	// DefaultServedWindow is the window GET /api/v1/publishers/{key}/served
	// covers when the request gives no from.
	DefaultServedWindow = 30 * 24 * time.Hour
	// MaxServedWindow bounds that window.
	MaxServedWindow = 31 * 24 * time.Hour
	// MaxServedPoints bounds its points: a longer window is summed in
	// steps of several epochs.
	MaxServedPoints = 1000
	// TopPaths is how many paths each of its top lists holds.
	TopPaths = 10
	// MaxAccountSites bounds the keys GET /api/v1/accounts/{id}/sites
	// lists: the account's own and its linked keys.
	MaxAccountSites = 1000
)

// Traffic is what the edges served for a key over some time.
type Traffic struct {
	// Bytes is the body bytes of the accepted records.
	Bytes int64 `json:"bytes"`
	// Requests is how many records were accepted.
	Requests int64 `json:"requests"`
}

// SiteTraffic is one key of an account and what was served for it.
type SiteTraffic struct {
	// Key is the publisher key (peer ID).
	Key string `json:"key"`
	// Name is the human name the key last published, from the origin's
	// billing log or else the edges' records; "" if billing knows none.
	Name string `json:"name,omitempty"`
	// Linked is false for the account's own key, true for a key linked
	// to it (an open link, or one that ended this month).
	Linked bool `json:"linked"`
	// LastEpoch is what was served in AccountSites.LastEpoch.
	LastEpoch Traffic `json:"last_epoch"`
	// Month is what was served in the epochs since AccountSites.Month.
	Month Traffic `json:"month"`
}

// AccountSites is the answer of GET /api/v1/accounts/{id}/sites: what was
// served for each of an account's keys.
type AccountSites struct {
	// Account is the account's peer ID.
	Account string `json:"account"`
	// LastEpoch is the start (Unix seconds) of the last epoch that ended:
	// edges report an epoch when it ends, so it is the latest epoch with
	// (nearly) all of its records in.
	LastEpoch int64 `json:"last_epoch"`
	// EpochSeconds is the epoch length.
	EpochSeconds int64 `json:"epoch_seconds"`
	// Month is the start of the current calendar month, UTC.
	Month time.Time `json:"month"`
	// Sites are the account's own key, then its linked keys in the order
	// they were linked; at most MaxAccountSites.
	Sites []SiteTraffic `json:"sites"`
}

// EpochTraffic is what was served in one step of a ServedHistory.
type EpochTraffic struct {
	// Epoch is the step's first epoch (start, Unix seconds).
	Epoch int64 `json:"epoch"`
	Traffic
}

// PathTraffic is what was served for one URL path.
type PathTraffic struct {
	Path string `json:"path"`
	Traffic
}

// ServedHistory is the answer of GET
// /api/v1/publishers/{key}/served?from=&to=: what was served for a key
// per epoch over a window, and its top paths in the window (paths as the
// edges report them, which nobody is paid by).
type ServedHistory struct {
	// Publisher is the key.
	Publisher string `json:"publisher"`
	// From and To bound the window, Unix seconds, To excluded: the epochs
	// that start in it.
	From int64 `json:"from"`
	To   int64 `json:"to"`
	// Step is the seconds each point sums: the epoch length, or a
	// multiple of it for a window of more than MaxServedPoints epochs.
	Step int64 `json:"step"`
	// Points are the steps with records, oldest first.
	Points []EpochTraffic `json:"points"`
	// Total is what was served in the window.
	Total Traffic `json:"total"`
	// TopByRequests and TopByBytes are the TopPaths paths with the most
	// requests and the most bytes in the window.
	TopByRequests []PathTraffic `json:"top_by_requests"`
	TopByBytes    []PathTraffic `json:"top_by_bytes"`
}

// AccountSites returns what was served for each key of account.
func (c *Client) AccountSites(ctx context.Context, account string) (*AccountSites, error) {
	var r AccountSites
	return &r, c.do(ctx, http.MethodGet, "/api/v1/accounts/"+url.PathEscape(account)+"/sites", nil, &r)
}

// ServedHistory returns what was served for key per epoch in [from, to)
// and its top paths; zero times are billing's defaults (the last
// DefaultServedWindow up to now).
func (c *Client) ServedHistory(ctx context.Context, key string, from, to time.Time) (*ServedHistory, error) {
	q := url.Values{}
	if !from.IsZero() {
		q.Set("from", strconv.FormatInt(from.Unix(), 10))
	}
	if !to.IsZero() {
		q.Set("to", strconv.FormatInt(to.Unix(), 10))
	}
	path := "/api/v1/publishers/" + url.PathEscape(key) + "/served"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var r ServedHistory
	return &r, c.do(ctx, http.MethodGet, path, nil, &r)
}
