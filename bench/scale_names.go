package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/libp2p/go-libp2p/core/crypto"
	mh "github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/dnsroute"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/origin"
	"github.com/topcdn/topcdn/originapi"
)

// scaleRoots is how many distinct roots the drill's names point at (one
// tiny raw block each, uploaded once).
const scaleRoots = 16

// seedKey derives the drill's key number i of a kind ("edge", "name", …)
// from a fixed seed, so that every run signs with the same keys.
func seedKey(kind string, i int) (*identity.Key, error) {
	seed := sha256.Sum256([]byte("topcdn-bench-scale/" + kind + "/" + strconv.Itoa(i)))
	sk, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		return nil, err
	}
	return identity.FromPrivate(sk)
}

// scaleName is a name the drill claims: its human name, IPNS name and
// signed record.
type scaleName struct {
	human string
	ipns  ipns.Name
	raw   []byte
}

// nameLabel is the human name of published name i.
func nameLabel(i int) string { return fmt.Sprintf("s%06d", i) }

// scaleOrigin is the drill's in-process origin, served on loopback.
type scaleOrigin struct {
	o     *origin.Origin
	url   string
	srv   *http.Server
	roots []cid.Cid
	names []string // the human names claimed, in order
	// retries counts claims sent again after PostgreSQL refused them as
	// conflicting with concurrent ones after sqldb.InTx's five tries.
	retries atomic.Int64
}

// serializationFailure reports whether err is PostgreSQL's refusal of a
// transaction that conflicted with another (SQLSTATE 40001 or 40P01).
func serializationFailure(err error) bool {
	var st interface{ SQLState() string }
	if !errors.As(err, &st) {
		return false
	}
	return st.SQLState() == "40001" || st.SQLState() == "40P01"
}

// startScaleOrigin opens an origin over db (a PostgreSQL DSN, or "" for
// SQLite in dir), uploads the drill's roots and serves it on loopback.
func startScaleOrigin(ctx context.Context, dir, db string) (*scaleOrigin, error) {
	key, err := seedKey("origin", 0)
	if err != nil {
		return nil, err
	}
	o, err := origin.New(ctx, origin.Config{DataDir: dir, DB: db, Key: key, PublisherQuota: -1})
	if err != nil {
		return nil, err
	}
	so := &scaleOrigin{o: o}
	pub, err := seedKey("publisher", 0)
	if err != nil {
		o.Close()
		return nil, err
	}
	var buf bytes.Buffer
	blocks := map[cid.Cid][]byte{}
	for i := range scaleRoots {
		data := []byte("topcdn scale drill: site content " + strconv.Itoa(i) + "\n")
		h, err := mh.Sum(data, mh.SHA2_256, -1)
		if err != nil {
			o.Close()
			return nil, err
		}
		c := cid.NewCidV1(cid.Raw, h)
		so.roots = append(so.roots, c)
		blocks[c] = data
	}
	w, err := storage.NewWritable(&buf, so.roots, car.WriteAsCarV1(true))
	if err != nil {
		o.Close()
		return nil, err
	}
	for _, c := range so.roots {
		if err := w.Put(ctx, c.KeyString(), blocks[c]); err != nil {
			o.Close()
			return nil, err
		}
	}
	if _, err := o.Ingest(ctx, origin.Upload{Publisher: pub.ID, Roots: so.roots}, &buf); err != nil {
		o.Close()
		return nil, fmt.Errorf("uploading the roots: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		o.Close()
		return nil, err
	}
	so.srv = &http.Server{Handler: o.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go so.srv.Serve(ln)
	so.url = "http://" + ln.Addr().String()
	return so, nil
}

func (so *scaleOrigin) close() {
	so.srv.Close()
	so.o.Close()
}

// signNames signs the records of names first … first+n-1 (labels from
// label), each with its own key, on every core.
func (so *scaleOrigin) signNames(first, n int, label func(int) string) ([]scaleName, error) {
	out := make([]scaleName, n)
	eol := time.Now().Add(48 * time.Hour)
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= n || firstErr.Load() != nil {
					return
				}
				i := first + j
				k, err := seedKey("name", i)
				if err != nil {
					firstErr.Store(&err)
					return
				}
				human := label(i)
				rec, err := ipns.NewRecord(k.Private, path.FromCid(so.roots[i%len(so.roots)]), 1, eol, time.Minute,
					ipns.WithMetadata(map[string]any{originapi.RecordNameKey: human}))
				if err == nil {
					out[j].raw, err = ipns.MarshalRecord(rec)
				}
				if err != nil {
					firstErr.Store(&err)
					return
				}
				out[j].human, out[j].ipns = human, ipns.NameFromPeer(k.ID)
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, fmt.Errorf("signing name records: %w", *p)
	}
	return out, nil
}

// claim claims names through origin.ClaimName with workers goroutines and
// returns the wall time.
func (so *scaleOrigin) claim(ctx context.Context, names []scaleName, workers int) (time.Duration, error) {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var done atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-progress.C:
				d := done.Load()
				fmt.Fprintf(os.Stderr, "scale:   %d of %d names claimed (%.0f/s)\n", d, len(names), float64(d)/time.Since(t0).Seconds())
			}
		}
	}()
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && firstErr.Load() == nil {
				j := int(next.Add(1)) - 1
				if j >= len(names) {
					return
				}
				n := names[j]
				for {
					_, err := so.o.ClaimName(ctx, n.human, n.ipns, n.raw)
					if err == nil {
						break
					}
					if serializationFailure(err) && ctx.Err() == nil {
						// sqldb.InTx tried 5 times; a publisher would
						// send the claim again.
						so.retries.Add(1)
						continue
					}
					err = fmt.Errorf("claiming %s: %w", n.human, err)
					firstErr.Store(&err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(stop)
	d := time.Since(t0)
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	for _, n := range names {
		so.names = append(so.names, n.human)
	}
	return d, nil
}

// namesAPI times GET /api/v1/names runs times and returns the latencies
// and the body's size; the body must list want names.
func (so *scaleOrigin) namesAPI(ctx context.Context, runs, want int) ([]time.Duration, int, error) {
	var lat []time.Duration
	size := 0
	client := &http.Client{Timeout: 5 * time.Minute}
	for range runs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, so.url+dnsroute.NamesPath, nil)
		if err != nil {
			return nil, 0, err
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, 0, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, 0, fmt.Errorf("GET %s: %s", dnsroute.NamesPath, resp.Status)
		}
		var list []originapi.NameInfo
		if err := json.Unmarshal(body, &list); err != nil {
			return nil, 0, err
		}
		if len(list) != want {
			return nil, 0, fmt.Errorf("GET %s listed %d names, want %d", dnsroute.NamesPath, len(list), want)
		}
		lat = append(lat, d)
		size = len(body)
	}
	return lat, size, nil
}

// Gate states: what namesGate lets the router see of the origin.
const (
	// gateClosed: no names ([]), and no name-change stream (503).
	gateClosed int32 = iota
	// gatePolling: the names list, still no stream (the router polls the
	// list every NamesInterval).
	gatePolling
	// gateOpen: the origin as it is.
	gateOpen
)

// namesGate stands between the router and the origin, so that the drill
// decides when the router learns the names: edges register and turn
// healthy before it has any (else every edge's registration and probe
// verdicts would copy the 100,000 names, minutes at 10,000 edges: see
// README), then names polls are timed, then the stream is let through.
type namesGate struct {
	origin http.Handler
	state  atomic.Int32
	// lastList is when the router last asked for the names list (Unix ns).
	lastList atomic.Int64
}

// namesChangesPath is the origin's name-change stream.
const namesChangesPath = dnsroute.NamesPath + "/changes"

func (g *namesGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case dnsroute.NamesPath:
		g.lastList.Store(time.Now().UnixNano())
		if g.state.Load() == gateClosed {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "[]")
			return
		}
	case namesChangesPath:
		if g.state.Load() != gateOpen {
			http.Error(w, "held back by the scale drill", http.StatusServiceUnavailable)
			return
		}
	}
	g.origin.ServeHTTP(w, r)
}

// originDir is where the drill's origin keeps its blocks (and SQLite).
func originDir(work string) string { return filepath.Join(work, "origin") }
