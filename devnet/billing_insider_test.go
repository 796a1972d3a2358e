package devnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsrouteapi"
	"github.com/topcdn/topcdn/identity"
)

// insider is an admitted edge's operator who, holding the edge's key,
// claims for one epoch all that the demand the router really sent the
// edge allows: an extra batch part of records of the site's biggest file,
// and a heartbeat whose epoch counter covers them. No check billing makes
// can tell: the records name content the edge serves, at times within the
// epoch, with client hashes of a client prefix, and the counter is the
// edge's own word. The bound is the demand (README, Threat model).
type insider struct {
	edge      Endpoint
	epoch     int64
	first     uint32 // the router's client units for the site, first in the answer
	other     uint32 // and in a later place
	probes    uint64 // the router's probe bytes of the edge in the epoch
	siteBytes int64  // the site's file bytes, the insider's estimate of its DAG bytes
	honest    int64  // the edge's own counter of the epoch, before the insider raised it
	claimed   int64  // the extra bytes claimed
	accepted  int64  // of those, what billing accepted at ingest
}

// insiderClaim makes the edge with the most demand in epoch claim, as an
// extra batch part, 1.1 × (F × the site's bytes × its units) plus the
// router's probe bytes in records of objCID (a file of root), and raise
// its counter of the epoch by as much, before the epoch is settled.
// Billing pays what its bound allows of it; the rest is refused.
func insiderClaim(t *testing.T, info Info, router []dnsrouteapi.EdgeInfo, epoch int64, root, objCID, siteDir string) *insider {
	t.Helper()
	var ins *insider
	for _, e := range info.Edges {
		re := routerEdge(router, e.PeerID)
		if re == nil {
			continue
		}
		for _, d := range re.Demand {
			if d.Epoch != epoch {
				continue
			}
			for _, s := range d.Sites {
				if s.Site != "name:"+info.Sites[0].Name {
					continue
				}
				if ins == nil || 2*s.First+s.Other > 2*ins.first+ins.other {
					ins = &insider{edge: e, epoch: epoch, first: s.First, other: s.Other, probes: d.ProbeBytes}
				}
			}
		}
	}
	if ins == nil {
		t.Fatalf("the router counted no demand for any edge in epoch %d", epoch)
	}
	for _, eb := range routerEdge(router, ins.edge.PeerID).Epochs {
		if eb.Epoch == epoch {
			ins.honest = int64(eb.Bytes)
		}
	}
	objSize := int64(0)
	err := filepath.WalkDir(siteDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		ins.siteBytes += st.Size()
		if strings.HasSuffix(p, filepath.FromSlash("docs/manual.txt")) {
			objSize = st.Size()
		}
		return nil
	})
	if err != nil || objSize == 0 {
		t.Fatalf("sizing %s: %v (manual.txt %d bytes)", siteDir, err, objSize)
	}
	units := float64(ins.first) + float64(ins.other)/2
	ins.claimed = int64(1.1*float64(billingDemandFactor)*float64(ins.siteBytes)*units) + int64(ins.probes)

	key, err := identity.Load(filepath.Join(ins.edge.DataDir, "edge.key"))
	if err != nil {
		t.Fatal(err)
	}
	salt := make([]byte, billingapi.SaltSize)
	rand.Read(salt)
	batch := billingapi.Batch{Edge: key.ID.String(), URL: ins.edge.URL, Epoch: epoch, EpochSeconds: int64(info.EpochSeconds),
		Part: 1, Seq: uint64(time.Now().UnixNano()), Salt: salt} // the Reporter sent part 0, with its own sequence
	serial := uint64(1) << 62                        // far from the Reporter's serials (nanoseconds since 1970)
	client := netip.AddrFrom4([4]byte{127, 0, 0, 1}) // where the devnet's honest clients fetch from
	for left := ins.claimed; left > 0; left -= objSize {
		n := len(batch.Records)
		batch.Records = append(batch.Records, billingapi.Record{Serial: serial + uint64(n), Name: info.Sites[0].Name,
			CID: objCID, Root: root, Bytes: min(left, objSize), Status: http.StatusOK,
			Time: epoch*1000 + int64(n)%(int64(info.EpochSeconds)*1000), Client: billingapi.ClientHash(salt, client)})
	}
	batch.MerkleRoot = billingapi.MerkleRoot(batch.Records)
	env, err := key.Sign(billingapi.TypeBatch, &batch)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(info.Billing.URL+"/api/v1/batches", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var res billingapi.BatchResult
	if resp.StatusCode != http.StatusOK || json.Unmarshal(answer, &res) != nil {
		t.Fatalf("the insider's batch: %s: %s", resp.Status, answer)
	}
	ins.accepted = res.Bytes

	// The counter: a heartbeat as the edge's own, the epoch closed with
	// the honest bytes plus the claim. The router keeps the highest.
	re := routerEdge(routerEdges(t, info), ins.edge.PeerID)
	hb := dnsrouteapi.Heartbeat{Addrs: re.Addrs, URL: re.URL, City: re.City, Load: re.Load, Capacity: re.Capacity,
		IntervalMS: re.IntervalMS, PrevEpoch: epoch, PrevEpochBytes: uint64(ins.honest + ins.claimed)}
	for _, eb := range re.Epochs {
		if eb.Epoch > epoch {
			hb.Epoch, hb.EpochBytes = eb.Epoch, eb.Bytes
		}
	}
	if hb.Epoch == 0 {
		hb.Epoch = epoch + int64(info.EpochSeconds)
	}
	routerURL := strings.TrimSuffix(info.DNS.API, dnsrouteapi.EdgesPath)
	for try := 0; ; try++ {
		// Refused (409) if the edge's own heartbeat was stamped later:
		// then stamp again.
		err := dnsrouteapi.SendHeartbeat(context.Background(), nil, routerURL, key, hb)
		if err == nil {
			break
		}
		if try == 2 {
			t.Fatalf("the insider's heartbeat: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("insider %s (%s) in epoch %d: %d first + %d later units, probes %d B, honest counter %d B; claims %d B more (%d records, %d accepted at ingest), counter raised to %d",
		ins.edge.City, short(ins.edge.PeerID), epoch, ins.first, ins.other, ins.probes, ins.honest, ins.claimed,
		len(batch.Records), ins.accepted, hb.PrevEpochBytes)
	return ins
}

// billingDemandFactor is billing's --demand-factor in the devnet (its
// default, billing.DefaultDemandFactor).
const billingDemandFactor = 2

// report logs what the insider got: its paid bytes of the epoch beyond
// the honest bytes it served (its own counter before it raised it), as a
// share of the honest bytes paid to all edges in that epoch and of the
// honest run's average epoch.
func (ins *insider) report(t *testing.T, led *ledger, info Info, served map[string]map[int64]int64,
	router []dnsrouteapi.EdgeInfo, epochs []int64) {
	paid := led.paidFor(ins.edge.PeerID, "served")[ins.epoch]
	honestPaid := min(paid, ins.honest)
	falseCredit := paid - honestPaid
	for _, e := range info.Edges {
		if e.PeerID != ins.edge.PeerID {
			honestPaid += led.paidFor(e.PeerID, "served")[ins.epoch]
		}
	}
	var honestServed int64
	for _, e := range info.Edges {
		honestServed += served[e.PeerID][ins.epoch]
	}
	refused := map[billingapi.Reason]int64{}
	for _, r := range led.statements[ins.edge.PeerID].Rejected {
		if r.Epoch == ins.epoch {
			refused[r.Reason] += r.Bytes
		}
	}
	var reasons []string
	for r, n := range refused {
		reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
	}
	sort.Strings(reasons)
	share := 0.0
	if honestPaid > 0 {
		share = float64(falseCredit) / float64(honestPaid)
	}
	units := float64(ins.first) + float64(ins.other)/2
	perUnit := 0.0
	if units > 0 {
		perUnit = float64(falseCredit) / units
	}
	t.Logf("INSIDER RESIDUAL: epoch %d, edge %s: paid %d B for %d B served honestly: false credit %d B = %.4f of the epoch's honest paid %d B (all edges, served %d B); %.1f units -> %.0f B per unit (site %d B); claimed %d B, refused {%s}",
		ins.epoch, ins.edge.City, paid, ins.honest, falseCredit, share, honestPaid, honestServed, units, perUnit, ins.siteBytes,
		ins.claimed, strings.Join(reasons, " "))
	t.Logf("  its allowance by the site's bytes alone, before the reference bound (estimated from the site's file bytes): first %d units x %d x %d B = %d B, later %d units x %d/2 x %d B = %d B",
		ins.first, billingDemandFactor, ins.siteBytes, int64(ins.first)*billingDemandFactor*ins.siteBytes,
		ins.other, billingDemandFactor, ins.siteBytes, int64(ins.other)*billingDemandFactor*ins.siteBytes/2)
	allowed, honest := headroom(router, led, info, epochs, ins.siteBytes)
	if honest > 0 {
		t.Logf("INSIDER HEADROOM by the site's bytes alone (before the reference bound) over the %d honest epochs, all edges: demand allowed at least %d B, %d B paid: %d B more = %.2f x the honest paid",
			len(epochs), allowed, honest, allowed-honest, float64(allowed-honest)/float64(honest))
	}
}

// headroom is the design's "insider headroom" over the honest run: what
// the router's demand allowed every edge in epochs (F × the site's bytes
// per unit, later places half, per site key) beyond what the edges were
// paid, which any admitted edge could have claimed undetected. The site's
// file bytes stand for each key's DAG bytes, and a key whose records
// resolved to both roots (the update's epoch) counts one root: the figure
// is a lower bound.
func headroom(router []dnsrouteapi.EdgeInfo, led *ledger, info Info, epochs []int64, siteBytes int64) (allowed, paid int64) {
	for _, e := range info.Edges {
		re := routerEdge(router, e.PeerID)
		if re == nil {
			continue
		}
		for _, d := range re.Demand {
			if !slices.Contains(epochs, d.Epoch) {
				continue
			}
			for _, s := range d.Sites {
				allowed += int64(billingDemandFactor * float64(siteBytes) * (float64(s.First) + float64(s.Other)/2))
			}
			allowed += int64(d.ProbeBytes)
		}
		p := led.paidFor(e.PeerID, "served")
		for _, ep := range epochs {
			paid += p[ep]
		}
	}
	return allowed, paid
}
