package origin

import (
	"cmp"
	"errors"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin/durability"
	"go.uber.org/zap"
)

// Defaults of Config.
const (
	DefaultMaxUploadSize        = 8 << 30
	DefaultMaxUploadBlocks      = 1_000_000
	DefaultMaxConcurrentUploads = 4
	DefaultPublisherQuota       = 10 << 30
	DefaultNameChangesRetention = 24 * time.Hour
	DefaultMaxNameWaiters       = 20_000
	DefaultMaxNameWaitersPerIP  = 4
	DefaultStripeWait           = 30 * time.Second
	DefaultDomain               = "cdn.test"
)

// Config configures an Origin. The zero value of a field means its
// default; a negative PublisherQuota turns the quota off, and New refuses
// other negative values (of the StripeConfig's too).
type Config struct {
	// DataDir holds the block store (blocks/), upload staging files
	// (staging/) and, by default, the metadata database (origin.db, see
	// DB) and the origin's key (origin.key). Required.
	DataDir string
	// DB is the metadata database: a SQLite file, or a PostgreSQL database
	// given by its URL (postgres://… or postgresql://…; package sqldb).
	// Default: DataDir/origin.db. Origins sharing a PostgreSQL database
	// coordinate their background work through it (see the README,
	// "Several origins").
	DB string
	// Key is the origin's identity. Default: loaded from DataDir/origin.key,
	// generated there on first start.
	Key *identity.Key
	// OriginIDs are the peer IDs of the network's origins, those sharing
	// DB, each signing with its own key: what storage peers, edges and
	// billing pin (GET /healthz reports them as origin_ids), and whose
	// manifests this origin re-signs. New refuses a set without this
	// origin's own ID: it would sign what nobody accepts. Default: this
	// origin's ID alone.
	OriginIDs []peer.ID
	// URL is the origin's base URL as its clients reach it, recorded for
	// the other origins sharing DB (table origins). Default: none.
	URL string
	// MaxUploadSize bounds one CAR upload, in bytes. Default:
	// DefaultMaxUploadSize (8 GiB).
	MaxUploadSize int64
	// MaxUploadBlocks bounds the blocks of one CAR upload (each costs a
	// little memory while the upload is checked). Default:
	// DefaultMaxUploadBlocks (1,000,000).
	MaxUploadBlocks int
	// MaxConcurrentUploads bounds how many CAR uploads are staged at once;
	// more get 503 with Retry-After. Default: DefaultMaxConcurrentUploads
	// (4).
	MaxConcurrentUploads int
	// PublisherQuota bounds the bytes each publisher may store: the blocks
	// its uploads newly add (blocks the origin already holds, whoever
	// uploaded them, are not counted again). An upload that would cross it
	// is refused with 413 and not kept. Default: DefaultPublisherQuota
	// (10 GiB). Negative: off, no quota.
	PublisherQuota int64
	// Publishers, when set, are the only keys whose signed uploads are
	// accepted; others get 403. Default: empty, any key may upload (each
	// within PublisherQuota).
	Publishers []peer.ID
	// Funds, when set, is asked before each upload whether its publisher
	// can pay (billing's view of the account); a publisher who cannot is
	// refused with 402 before any byte is read. Default: nil, no check.
	Funds Funds
	// Billing is the URL of the billing service behind Funds, told to
	// publishers in the check's answer (PublisherUsage.Billing) so that
	// they can link their site keys to their account there. Default: "",
	// none told.
	Billing string
	// Domain is the domain sites are served under by the edges (NAME.DOMAIN,
	// ROOT.ipfs.DOMAIN, K51….ipns.DOMAIN), told to publishers in the
	// check's answer so that they can print their sites' URLs. Default:
	// DefaultDomain.
	Domain string
	// Deserialized makes the gateway also answer deserialized requests
	// (files and directories, as a browser wants), not only the trustless
	// raw, CAR and IPNS record responses. Default: false.
	Deserialized bool
	// AllowIncomplete accepts uploads whose blocks link to blocks neither
	// in the upload nor stored (roots must still be present). For test
	// fixtures that leave blocks out on purpose, such as those of
	// ipfs/gateway-conformance; the store is then no longer closed under
	// links, so it requires Stripe to be nil. Default: false.
	AllowIncomplete bool
	// Stripe, when set, moves published content to storage peers (see
	// durability.StripeConfig). Default: nil, content stays on the
	// origin's disk.
	Stripe *durability.StripeConfig
	// HeartbeatInterval is how often storage peers send heartbeats; a peer
	// silent for three intervals is unhealthy. Default: 10s
	// (durability.DefaultHeartbeatInterval).
	HeartbeatInterval time.Duration
	// NameChangesRetention is how long the name-change stream
	// (GET /api/v1/names/changes) keeps a change; the last 10,000 are kept
	// whatever their age. A reader further behind starts over (Reset).
	// Default: DefaultNameChangesRetention (24h).
	NameChangesRetention time.Duration
	// MaxNameWaiters bounds the requests on the name-change stream at once
	// (long-polls, each parked until a change or its wait ends); more get
	// 503 with Retry-After. Default: DefaultMaxNameWaiters (20,000).
	MaxNameWaiters int
	// MaxNameWaitersPerIP bounds those requests per client IP address (the
	// connection's, not a forwarded header's): an edge or router holds
	// one. Default: DefaultMaxNameWaitersPerIP (4).
	MaxNameWaitersPerIP int
	// StripeWait is how long an upload waits for its roots to be striped
	// onto the storage peers before it is answered (UploadResult.Striped
	// says whether they were): a publish acknowledged striped lives on the
	// peers, not on the origin's disk alone, and the name it then moves is
	// served by edges from the peers at once. Past it, the upload is
	// answered anyway and striping goes on in the background. Default:
	// DefaultStripeWait (30s). Negative: answer at once. Not used with
	// PostgreSQL and striping: several origins share the database, and an
	// upload is striped before it is answered at all (a 503 if it cannot
	// be).
	StripeWait time.Duration
	// Logger receives structured logs. Default: no logging.
	Logger *zap.Logger
	// Registry receives the origin's and the gateway's Prometheus metrics and
	// is served at /metrics. Default: a new registry.
	Registry *prometheus.Registry
}

// setDefaults fills in what cfg leaves unset and checks the rest, before
// anything is created in DataDir.
func (cfg *Config) setDefaults() error {
	if cfg.DataDir == "" {
		return errors.New("origin: DataDir is required")
	}
	if cfg.MaxUploadSize < 0 || cfg.MaxUploadBlocks < 0 || cfg.MaxConcurrentUploads < 0 || cfg.HeartbeatInterval < 0 {
		return errors.New("origin: MaxUploadSize, MaxUploadBlocks, MaxConcurrentUploads and HeartbeatInterval cannot be negative")
	}
	if cfg.NameChangesRetention < 0 || cfg.MaxNameWaiters < 0 || cfg.MaxNameWaitersPerIP < 0 {
		return errors.New("origin: NameChangesRetention, MaxNameWaiters and MaxNameWaitersPerIP cannot be negative")
	}
	cfg.NameChangesRetention = cmp.Or(cfg.NameChangesRetention, DefaultNameChangesRetention)
	cfg.StripeWait = cmp.Or(cfg.StripeWait, DefaultStripeWait)
	cfg.MaxNameWaiters = cmp.Or(cfg.MaxNameWaiters, DefaultMaxNameWaiters)
	cfg.MaxNameWaitersPerIP = cmp.Or(cfg.MaxNameWaitersPerIP, DefaultMaxNameWaitersPerIP)
	cfg.MaxUploadSize = cmp.Or(cfg.MaxUploadSize, DefaultMaxUploadSize)
	cfg.MaxUploadBlocks = cmp.Or(cfg.MaxUploadBlocks, DefaultMaxUploadBlocks)
	cfg.MaxConcurrentUploads = cmp.Or(cfg.MaxConcurrentUploads, DefaultMaxConcurrentUploads)
	cfg.Domain = cmp.Or(cfg.Domain, DefaultDomain)
	cfg.DB = cmp.Or(cfg.DB, filepath.Join(cfg.DataDir, "origin.db"))
	switch {
	case cfg.PublisherQuota == 0:
		cfg.PublisherQuota = DefaultPublisherQuota
	case cfg.PublisherQuota < 0:
		cfg.PublisherQuota = 0 // from here on 0 is no quota, as the API reports it
	}
	if cfg.AllowIncomplete && cfg.Stripe != nil {
		return errors.New("origin: AllowIncomplete needs striping off (Stripe nil)")
	}
	if cfg.Stripe != nil {
		if err := cfg.Stripe.Validate(); err != nil {
			return err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	return nil
}
