package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/edge"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/prom"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the Caddy app topcdn, which starts the topcdn handlers of a
// config. Caddy provisions every module of a config both to run it and
// to validate it (caddy validate, caddy adapt --validate), and starts
// apps only to run it: a handler's Provision therefore only checks, and
// what touches the disk or the network (creating the key file, opening
// the disk cache, heartbeats, billing reports) waits for Start. Handlers
// load the app themselves; it needs no configuration.
type App struct {
	handlers []*Handler
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "topcdn",
		New: func() caddy.Module { return new(App) },
	}
}

// Start starts the config's topcdn handlers. Caddy starts its apps in no
// set order, so a handler that serves a request before Start starts
// itself then.
func (a *App) Start() error {
	var errs []error
	for _, h := range a.handlers {
		errs = append(errs, h.start())
	}
	return errors.Join(errs...)
}

// Stop does nothing: each handler's Cleanup lets go of what it started.
func (a *App) Stop() error { return nil }

// defaultKeyFile is the key an edge configured without one keeps, in
// Caddy's data directory, so that its identity (which billing pays) lasts
// across restarts.
func defaultKeyFile() string {
	return filepath.Join(caddy.AppDataDir(), "topcdn", "edge.key")
}

// checkKey loads the key file at path, if there is one, and changes
// nothing: a key that cannot be used fails the config at validation.
func checkKey(path string) error {
	if _, err := identity.Load(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("topcdn: key: %w", err)
	}
	return nil
}

// handlerRun is what a provisioned handler starts, once.
type handlerRun struct {
	once sync.Once
	inst *instance
	key  string // inst's key in instances
	err  error
}

// start starts the handler, once: it runs the instance for its config,
// or shares the one another handler of the config started.
func (h *Handler) start() error {
	r := h.run
	r.once.Do(func() {
		b, err := json.Marshal(h)
		if err != nil {
			r.err = fmt.Errorf("topcdn: %w", err)
			return
		}
		// Caddy's metrics registry is the config's own: a reload, which
		// brings a new one, gets a new edge (sharing the caches).
		r.key = fmt.Sprintf("%p %s %s", h.registry, h.keyPath, b)
		v, _, err := instances.LoadOrNew(r.key, func() (caddy.Destructor, error) { return startInstance(h) })
		if err != nil {
			r.err = err
			return
		}
		r.inst = v.(*instance)
	})
	return r.err
}

// stop lets go of what start took. It waits for a start under way, and
// no start follows it.
func (h *Handler) stop() error {
	if h.run == nil {
		return nil // Provision failed before
	}
	h.run.once.Do(func() { h.run.err = errors.New("topcdn: handler cleaned up") })
	if h.run.inst == nil {
		return nil
	}
	_, err := instances.Delete(h.run.key)
	return err
}

// instances shares one running edge among the handlers of a loaded config
// that are configured alike: one site block with several addresses (HTTP
// and HTTPS) or several site blocks with the same topcdn block. They
// serve the same content the same way, and one edge registers its metrics
// once, sends one heartbeat per interval and one billing report per epoch.
var instances = caddy.NewUsagePool()

// instance is a running edge: its key, caches, heartbeats and billing
// reporter.
type instance struct {
	conf     *Handler // the handler that started it; all sharing it are configured alike
	edge     *edge.Edge
	key      *identity.Key
	reporter *billingapi.Reporter
	stateKey string
	diskKey  string             // "" without a disk cache
	stop     context.CancelFunc // ends the edge's and the background work's context
	done     chan struct{}      // closed when the background work ended
}

// startInstance loads (or creates) the key, opens the caches, builds the
// edge and starts the heartbeats and billing reports, for h's config. It
// lets go of what it took if it fails.
func startInstance(h *Handler) (_ *instance, err error) {
	ctx, stop := context.WithCancel(context.Background())
	in := &instance{conf: h, stop: stop, done: make(chan struct{})}
	defer func() {
		if err != nil {
			stop()
			err = errors.Join(err, in.release())
		}
	}()
	if in.key, err = loadKey(h.keyPath, h.logger); err != nil {
		return nil, err
	}
	cfg := edge.Config{Origin: h.Origin, Domain: h.Domain, MemoryBytes: max(1, int64(float64(h.MemoryCacheBytes)*cacheShare)),
		DNSLinks: h.DNSLinks, Logger: h.logger, Key: in.key, Registry: firstRegisterer{Registerer: h.registry, logger: h.logger, warned: new(atomic.Bool)}}
	cfg.HTTPSPort = h.HTTPSPort
	if u, err := url.Parse(h.PublicURL); err == nil { // Validate checked it
		cfg.PublicHost = u.Hostname()
	}
	// The build, as every topcdn role says it (Caddy adds the Go runtime's
	// and the process's collectors).
	if err = cfg.Registry.Register(prom.BuildInfo()); err != nil {
		return nil, fmt.Errorf("topcdn: metrics: %w", err)
	}
	if cfg.State, in.stateKey, err = loadState(stateKey{Origin: h.Origin, OriginID: h.OriginID, Domain: h.Domain,
		KeyFile: h.keyPath, DNSLinks: h.DNSLinks, MemoryBytes: cfg.MemoryBytes}); err != nil {
		return nil, fmt.Errorf("topcdn: %w", err)
	}
	if h.OriginID != "" {
		cfg.OriginID, _ = peer.Decode(h.OriginID) // Validate checked it
	}
	if h.Billing != "" {
		in.reporter = billingapi.NewReporter(in.key, h.Billing, billingapi.WithEpoch(time.Duration(h.BillingEpoch)),
			billingapi.WithLogger(h.logger.Named("billing")), billingapi.WithPublicURL(h.PublicURL))
		cfg.Recorder = recorder{in.reporter}
	}
	if h.DiskCacheDir != "" {
		var key string
		if cfg.Disk, key, err = openDisk(h.DiskCacheDir, h.DiskCacheBytes); err != nil {
			return nil, err
		}
		in.diskKey = key
	}
	if in.edge, err = edge.New(ctx, cfg); err != nil {
		return nil, fmt.Errorf("topcdn: %w", err)
	}
	in.startBackground(ctx)
	return in, nil
}

// loadKey loads the key file at path, creating it if there is none, and
// logs which it is.
func loadKey(path string, log *zap.Logger) (*identity.Key, error) {
	k, err := identity.Load(path)
	created := errors.Is(err, fs.ErrNotExist)
	if created {
		k, err = identity.LoadOrGenerate(path) // another process may have created it meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("topcdn: key: %w", err)
	}
	msg := "edge identity loaded"
	if created {
		msg = "edge identity created"
	}
	log.Info(msg, zap.String("key_file", path), zap.Stringer("peer_id", k.ID))
	return k, nil
}

// Destruct stops the background work and lets go of the State and the
// disk cache.
func (in *instance) Destruct() error {
	in.stopBackground()
	return in.release()
}

// release lets go of the State and the disk cache, those taken.
func (in *instance) release() error {
	var err error
	if in.stateKey != "" {
		err = releaseState(in.stateKey)
	}
	if in.diskKey != "" {
		err = errors.Join(err, releaseDisk(in.diskKey))
	}
	return err
}

// firstRegisterer registers collectors on a config's metrics registry,
// keeping the first when two describe the same metrics: handlers
// configured alike share one edge, but handlers configured otherwise in
// one config each build one, which would register the same topcdn_edge_*
// metrics again. Only the first edge's are exported then, which it logs.
type firstRegisterer struct {
	prometheus.Registerer
	logger *zap.Logger
	warned *atomic.Bool
}

// Register registers c unless a collector of the same metrics is.
func (r firstRegisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		if !r.warned.Swap(true) {
			r.logger.Warn("topcdn handlers configured differently share one metrics registry: the metrics of the first only are exported")
		}
		return nil
	}
	return err
}

// MustRegister registers cs, panicking on an error other than a
// collector already there.
func (r firstRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Interface guards.
var (
	_ caddy.App        = (*App)(nil)
	_ caddy.Destructor = (*instance)(nil)
)
