package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/billing"
	"github.com/topcdn/topcdn/billing/witness"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
)

// Billing's simulated content: sites served by the edges, each of
// siteBytes, each edge serving sitesPerEdge of them.
const (
	scaleSites   = 1000
	siteBytes    = 10 << 20
	sitesPerEdge = 5
)

// billingResult is what the billing phase measured at one edge count.
type billingResult struct {
	Edges           int     `json:"edges"`
	RecordsPerBatch int     `json:"records_per_batch"`
	EpochSeconds    float64 `json:"epoch_seconds"`
	AdmitSeconds    float64 `json:"admit_seconds"`
	IngestSeconds   float64 `json:"ingest_seconds"`
	RecordsPerSec   float64 `json:"records_per_sec"`
	SettleSeconds   float64 `json:"settle_seconds"`
	// SettleRecordsPerSec is the epoch's records over the settlement's
	// wall time.
	SettleRecordsPerSec float64 `json:"settle_records_per_sec"`
	// EpochShare is ingest plus settlement over the epoch's length: above
	// 1, billing falls behind the edges.
	EpochShare float64 `json:"epoch_share"`
	Claimed    int64   `json:"claimed_bytes"`
	Paid       int64   `json:"paid"`
	// PostgresCPUSeconds is the server's CPU time over ingest and
	// settlement (0: unknown, a server of -pg).
	PostgresCPUSeconds float64 `json:"postgres_cpu_seconds"`
}

// scaleContent is billing's view of the simulated sites: site s, named
// siteNNNN, is published by its own key and has one root.
type scaleContent struct {
	pubs  []peer.ID
	roots []string
	byKey map[string]int // name or root -> site
}

func newScaleContent() (*scaleContent, error) {
	c := &scaleContent{byKey: map[string]int{}}
	for s := range scaleSites {
		k, err := seedKey("site-publisher", s)
		if err != nil {
			return nil, err
		}
		h, err := mh.Sum([]byte("scale site "+strconv.Itoa(s)), mh.SHA2_256, -1)
		if err != nil {
			return nil, err
		}
		root := cid.NewCidV1(cid.DagProtobuf, h).String()
		c.pubs, c.roots = append(c.pubs, k.ID), append(c.roots, root)
		c.byKey[siteName(s)], c.byKey[root] = s, s
	}
	return c, nil
}

// siteName is site s's name.
func siteName(s int) string { return fmt.Sprintf("site%04d", s) }

func (c *scaleContent) Object(ctx context.Context, name, root, cid string) (witness.Object, error) {
	s, ok := c.byKey[name]
	if !ok {
		s, ok = c.byKey[root]
	}
	if !ok {
		return witness.Object{}, &billing.RejectError{Reason: billingapi.ReasonUnpublished, Err: fmt.Errorf("%s%s is not published", name, root)}
	}
	return witness.Object{Publisher: c.pubs[s], MaxBytes: 1 << 20, Root: c.roots[s]}, nil
}

func (c *scaleContent) ShardPublisher(ctx context.Context, shard string) (peer.ID, error) {
	return "", &billing.RejectError{Reason: billingapi.ReasonUnknownShard, Err: fmt.Errorf("shard %s unknown", shard)}
}

func (c *scaleContent) Holdings(ctx context.Context) ([]witness.Holding, error) { return nil, nil }

func (c *scaleContent) SiteBytes(ctx context.Context, root string) (int64, error) {
	return siteBytes, nil
}

// scaleDirectory stands for the DNS router as billing's witness: for each
// edge, its heartbeats' byte counter of the epoch (closed) and the client
// units the router sent it per site (100 each, first in the answer).
type scaleDirectory struct{ edges []dnsrouteapi.EdgeInfo }

func (d *scaleDirectory) Edges(ctx context.Context) ([]dnsrouteapi.EdgeInfo, error) {
	return d.edges, nil
}

var (
	_ billing.Content       = (*scaleContent)(nil)
	_ billing.Sizer         = (*scaleContent)(nil)
	_ billing.EdgeDirectory = (*scaleDirectory)(nil)
)

// edgeSite is the j-th site edge i serves.
func edgeSite(i, j int) int { return (i*sitesPerEdge + j) % scaleSites }

// signEpoch signs, for each edge, its batch of epoch (records records,
// over sitesPerEdge sites) and returns the batches, the router's evidence
// for them and the bytes claimed.
func signEpoch(keys []*identity.Key, epoch, secs int64, records int) ([]*identity.Envelope, []dnsrouteapi.EdgeInfo, int64, error) {
	salt := make([]byte, billingapi.SaltSize)
	client := billingapi.ClientHash(salt, netip.MustParseAddr("192.0.2.1"))
	envs := make([]*identity.Envelope, len(keys))
	infos := make([]dnsrouteapi.EdgeInfo, len(keys))
	var claimed atomic.Int64
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for firstErr.Load() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(keys) {
					return
				}
				recs := make([]billingapi.Record, records)
				var sum int64
				for r := range recs {
					s := edgeSite(i, r%sitesPerEdge)
					recs[r] = billingapi.Record{Serial: uint64(r + 1), Name: siteName(s), CID: "bafkobject" + strconv.Itoa(r),
						Bytes: 1000 + int64((i+r)%500), Status: 200, Time: epoch*1000 + int64(r)*int64(secs)*1000/int64(records), Client: client}
					sum += recs[r].Bytes
				}
				b := billingapi.Batch{Edge: keys[i].ID.String(), Epoch: epoch, EpochSeconds: secs, Part: 0, Seq: 1, Salt: salt,
					Records: recs, MerkleRoot: billingapi.MerkleRoot(recs)}
				env, err := keys[i].Sign(billingapi.TypeBatch, &b)
				if err != nil {
					firstErr.Store(&err)
					return
				}
				envs[i] = env
				info := dnsrouteapi.EdgeInfo{Peer: keys[i].ID.String(), Healthy: true,
					Epochs: []dnsrouteapi.EpochBytes{{Epoch: epoch, Bytes: uint64(sum), Closed: true}}}
				d := dnsrouteapi.EpochDemand{Epoch: epoch}
				for j := range sitesPerEdge {
					d.Sites = append(d.Sites, dnsrouteapi.SiteDemand{Site: "name:" + siteName(edgeSite(i, j)), First: 100})
				}
				info.Demand = []dnsrouteapi.EpochDemand{d}
				infos[i] = info
				claimed.Add(sum)
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, nil, 0, *p
	}
	return envs, infos, claimed.Load(), nil
}

// parallel calls f(i) for i < n on workers goroutines and returns the
// first error.
func parallel(ctx context.Context, n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && firstErr.Load() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					firstErr.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

// runBillingPhase admits n edges, ingests one batch of each for one epoch
// and settles it, on a fresh PostgreSQL database.
func runBillingPhase(ctx context.Context, cfg *scaleConfig, pg *pgServer, n int) (*billingResult, error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "scale: [%d edges] billing: "+format+"\n", append([]any{n}, args...)...)
	}
	dsn, err := pg.createDB(ctx, "billing"+strconv.Itoa(n))
	if err != nil {
		return nil, err
	}
	db, err := billing.OpenDB(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	operator, err := seedKey("operator", 0)
	if err != nil {
		return nil, err
	}
	content, err := newScaleContent()
	if err != nil {
		return nil, err
	}
	dir := &scaleDirectory{}
	l, err := billing.New(ctx, db, content, operator.ID, billing.Config{Epoch: cfg.epoch, SettleDelay: -1,
		PricePerGiBServed: billing.GiB, DNS: dir})
	if err != nil {
		return nil, err
	}
	res := &billingResult{Edges: n, RecordsPerBatch: cfg.records, EpochSeconds: cfg.epoch.Seconds()}
	keys := make([]*identity.Key, n)
	admissions := make([]*identity.Envelope, n)
	if err := parallel(ctx, n, runtime.NumCPU(), func(i int) error {
		var err error
		if keys[i], err = seedKey("edge", i); err != nil {
			return err
		}
		admissions[i], err = operator.Sign(billingapi.TypeAdmission, billingapi.Admission{Edge: keys[i].ID.String(), Nonce: "scale-" + strconv.Itoa(i)})
		return err
	}); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := parallel(ctx, n, cfg.billingWorkers, func(i int) error {
		_, err := l.Admit(ctx, admissions[i])
		return err
	}); err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	res.AdmitSeconds = time.Since(t0).Seconds()
	logf("%d edges admitted in %.1f s", n, res.AdmitSeconds)

	secs := int64(cfg.epoch / time.Second)
	epoch := time.Now().Unix() / secs * secs
	envs, infos, claimed, err := signEpoch(keys, epoch, secs, cfg.records)
	if err != nil {
		return nil, err
	}
	dir.edges, res.Claimed = infos, claimed
	pgCPU0, pgKnown := pgCPU(pg.pid)
	t1 := time.Now()
	var accepted atomic.Int64
	if err := parallel(ctx, n, cfg.billingWorkers, func(i int) error {
		r, err := l.IngestBatch(ctx, envs[i], netip.Addr{})
		if err != nil {
			return fmt.Errorf("batch of edge %d: %w", i, err)
		}
		accepted.Add(int64(r.Accepted))
		return nil
	}); err != nil {
		return nil, err
	}
	ingest := time.Since(t1)
	res.IngestSeconds = ingest.Seconds()
	res.RecordsPerSec = float64(accepted.Load()) / ingest.Seconds()
	if want := int64(n * cfg.records); accepted.Load() != want {
		return nil, fmt.Errorf("billing: %d of %d records accepted", accepted.Load(), want)
	}
	logf("%d records ingested in %.1f s (%.0f/s)", accepted.Load(), res.IngestSeconds, res.RecordsPerSec)
	end := time.Unix(epoch+secs, 0).Add(100 * time.Millisecond)
	if d := time.Until(end); d > 0 {
		logf("waiting %s for the epoch to end", d.Round(time.Second))
		pgWait0, _ := pgCPU(pg.pid)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d):
		}
		pgWait1, _ := pgCPU(pg.pid)
		pgCPU0 += pgWait1 - pgWait0 // the server's idle work is not the drill's
	}
	t2 := time.Now()
	sr, err := l.Settle(ctx)
	if err != nil {
		return nil, fmt.Errorf("settle: %w", err)
	}
	res.SettleSeconds = time.Since(t2).Seconds()
	res.SettleRecordsPerSec = float64(accepted.Load()) / res.SettleSeconds
	if pgCPU1, ok := pgCPU(pg.pid); ok && pgKnown {
		res.PostgresCPUSeconds = (pgCPU1 - pgCPU0).Seconds()
	}
	res.Paid = sr.Paid
	res.EpochShare = (res.IngestSeconds + res.SettleSeconds) / cfg.epoch.Seconds()
	logf("settled in %.1f s: paid %d of %d bytes claimed", res.SettleSeconds, sr.Paid, claimed)
	if !slices.Contains(sr.Epochs, epoch) {
		return nil, fmt.Errorf("billing: settle did not settle epoch %d (settled %v)", epoch, sr.Epochs)
	}
	if sr.Paid != claimed {
		return nil, fmt.Errorf("billing: paid %d for %d bytes claimed (price: one per byte); every record should be paid", sr.Paid, claimed)
	}
	return res, nil
}

// pgCPU is the CPU time of a PostgreSQL cluster so far: the postmaster,
// its live processes and those that exited (a backend exits when the
// client's pool closes its connection, taking its CPU time out of the live
// processes' sum).
func pgCPU(pid int) (time.Duration, bool) {
	live, ok := procTreeCPU(pid)
	if !ok {
		return 0, false
	}
	reaped, ok := procReapedCPU(pid)
	return live + reaped, ok
}
