package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/klauspost/reedsolomon"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storage"
)

// Shape of the erasure benchmark: the project's defaults (10+4, 64 MiB
// segments, 32 KiB chunks) over kubo-sized 256 KiB raw blocks.
const (
	erasureDataShards   = erasure.DefaultDataShards
	erasureParityShards = erasure.DefaultParityShards
	erasureSegmentSize  = erasure.DefaultSegmentSize
	erasureChunkSize    = erasure.DefaultChunkSize
	erasureBlockSize    = 256 << 10
	// erasurePeerCapacity is each storage peer's --capacity: far more than
	// one run stores on it (one shard of every segment).
	erasurePeerCapacity = "2GiB"
	// serviceStartTimeout bounds how long a topcdn service may take to
	// print "listening on".
	serviceStartTimeout = 30 * time.Second
	// serviceStopGrace is how long a service has to exit after SIGTERM
	// before it is killed.
	serviceStopGrace = 10 * time.Second
)

// Phase names, in report order.
const (
	phaseRawRS    = "raw reedsolomon encode"
	phasePlain    = "plain fsynced write"
	phaseStore    = "stripe-and-store"
	phaseFast     = "fast-path read"
	phaseDegraded = "degraded read"
)

var erasurePhases = []string{phaseRawRS, phasePlain, phaseStore, phaseFast, phaseDegraded}

// erasurePhaseResult holds one phase's measurements.
type erasurePhaseResult struct {
	// Name is one of the phase names above.
	Name string `json:"name"`
	// Seconds are the wall times of the timed runs, in run order.
	Seconds []float64 `json:"seconds"`
	// CPUSeconds are, per run, the CPU time (user + system) of the harness
	// plus, for the phases that use them, every topcdn process alive
	// during the phase; ServiceCPUSeconds the part of the topcdn
	// processes. Empty where unknown (non-Linux).
	CPUSeconds        []float64 `json:"cpu_seconds,omitempty"`
	ServiceCPUSeconds []float64 `json:"service_cpu_seconds,omitempty"`
	// MedianSeconds summarizes Seconds.
	MedianSeconds float64 `json:"median_seconds"`
	// MiBPerSecond is the input size divided by MedianSeconds: MiB/s of
	// input, whatever the phase reads or writes.
	MiBPerSecond float64 `json:"mib_per_second"`
	// ShardReads, ShardReadBytes and FailedShardReads count, per run, the
	// GetShard calls of a read phase, the bytes they asked for and how
	// many failed.
	ShardReads       []int64 `json:"shard_reads,omitempty"`
	ShardReadBytes   []int64 `json:"shard_read_bytes,omitempty"`
	FailedShardReads []int64 `json:"failed_shard_reads,omitempty"`

	wall, cpu, svcCPU []time.Duration
}

// erasureDegradedRun describes what one run's degraded read faced.
type erasureDegradedRun struct {
	// KilledPeers are the peers holding shards 0..m-1 of segment 0,
	// killed with SIGKILL before the read.
	KilledPeers []string `json:"killed_peers"`
	// LostShards lists, per segment, the shard indexes the killed peers
	// held.
	LostShards [][]int `json:"lost_shards"`
	// LostDataShards counts the data shards among them, over all segments.
	LostDataShards int `json:"lost_data_shards"`
	// BlocksRebuilt is how many blocks had bytes on a lost data shard, so
	// needed a reconstruction.
	BlocksRebuilt int `json:"blocks_rebuilt"`
}

// erasureResult is the full report of the erasure benchmark, as written by
// -json.
type erasureResult struct {
	Benchmark string      `json:"benchmark"`
	Time      time.Time   `json:"time"`
	Machine   machineInfo `json:"machine"`
	// Dir is the work directory (shards, peers' data, plain writes) and
	// Filesystem its type.
	Dir        string `json:"dir"`
	Filesystem string `json:"filesystem"`
	Runs       int    `json:"runs"`

	InputBytes   int64  `json:"input_bytes"`
	InputSHA256  string `json:"input_sha256"`
	Blocks       int    `json:"blocks"`
	BlockSize    int    `json:"block_size"`
	DataShards   int    `json:"data_shards"`
	ParityShards int    `json:"parity_shards"`
	SegmentSize  int64  `json:"segment_size"`
	ChunkSize    int    `json:"chunk_size"`
	// SegmentLengths are the segments the Packer makes of the input.
	SegmentLengths []int64 `json:"segment_lengths"`
	// StoredBytes is what striping writes: k+m shards of every segment.
	// The plain write writes as much.
	StoredBytes int64 `json:"stored_bytes"`
	// CIDSeconds is the time taken to hash the input's blocks (done once,
	// before any timing).
	CIDSeconds float64 `json:"cid_seconds"`

	StorageProcesses int    `json:"storage_processes"`
	StoreConcurrency int    `json:"store_concurrency"`
	WriteConcurrency int    `json:"write_concurrency"`
	ReadWorkers      int    `json:"read_workers"`
	HedgeAfter       string `json:"hedge_after"`

	Phases   []erasurePhaseResult `json:"phases"`
	Degraded []erasureDegradedRun `json:"degraded"`

	// StoreOverPlain is stripe-and-store MiB/s over plain-write MiB/s
	// (goal >= 0.5); DegradedOverFast is degraded-read MiB/s over
	// fast-path MiB/s (goal >= 0.5); RawOverStore is raw-RS MiB/s over
	// stripe-and-store MiB/s, for context.
	StoreOverPlain   float64 `json:"store_over_plain"`
	DegradedOverFast float64 `json:"degraded_over_fast"`
	RawOverStore     float64 `json:"raw_over_store"`
}

func (r *erasureResult) phase(name string) *erasurePhaseResult {
	for i := range r.Phases {
		if r.Phases[i].Name == name {
			return &r.Phases[i]
		}
	}
	panic("unknown phase " + name)
}

// erasureBench is the state shared by the runs.
type erasureBench struct {
	in          *erasureInput
	segs        []int64
	striper     *erasure.Striper
	enc         reedsolomon.Encoder
	bin         string
	work        string
	originKey   string // path of the origin's key file
	signer      *identity.Key
	readerKey   *identity.Key
	peers       int
	writers     int
	readWorkers int
	hedge       time.Duration
	timeout     time.Duration
	res         *erasureResult
}

// runErasure implements `bench erasure`.
func runErasure(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("erasure", flag.ContinueOnError)
	fset.Usage = func() {
		w := fset.Output()
		fmt.Fprintln(w, "usage: go run ./bench erasure [flags]")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "On one deterministic input, measures raw Reed-Solomon coding (10+4, 64 MiB")
		fmt.Fprintln(w, "segments), a plain fsynced write of as many bytes as striping stores, striping")
		fmt.Fprintln(w, "onto 14 real `topcdn storage` peers, reading every block back on the fast path,")
		fmt.Fprintln(w, "and reading them again with the peers of 4 data shards killed.")
		fmt.Fprintln(w)
		fset.PrintDefaults()
	}
	runs := fset.Int("runs", 3, "timed runs of every phase")
	jsonPath := fset.String("json", "", "also write results as JSON to `file`")
	sizeMiB := fset.Int("size-mib", 256, "input size in MiB")
	timeout := fset.Duration("timeout", 10*time.Minute, "timeout for each phase of each run")
	topcdnBin := fset.String("topcdn", "", "use this prebuilt topcdn `binary` instead of building ./cmd/topcdn")
	readWorkers := fset.Int("read-workers", 8, "blocks read concurrently by the read phases")
	hedge := fset.Duration("hedge-after", 50*time.Millisecond, "erasure.WithHedgeAfter of the degraded read")
	writers := fset.Int("write-concurrency", erasureDataShards+erasureParityShards,
		"files written at once by the plain write (default: one per shard of a segment, as k+m peers write)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fset.Usage()
		return errUsage
	}
	if *runs < 1 || *sizeMiB < 1 || *timeout <= 0 || *readWorkers < 1 || *hedge <= 0 || *writers < 1 {
		return errors.New("erasure: -runs, -size-mib, -timeout, -read-workers, -hedge-after and -write-concurrency must be positive")
	}

	cache, err := cacheDir()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(cache, "erasure-work-")
	if err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	defer os.RemoveAll(work)
	fsName, inMemory, err := fsInfo(work)
	if err != nil {
		return err
	}
	if inMemory {
		return fmt.Errorf("erasure: the work dir %s is on %s, where fsync does nothing; set TOPCDN_BENCH_CACHE to a directory on a disk", work, fsName)
	}

	b := &erasureBench{work: work, peers: erasureDataShards + erasureParityShards, writers: *writers,
		readWorkers: *readWorkers, hedge: *hedge, timeout: *timeout}
	if b.bin = *topcdnBin; b.bin == "" {
		if b.bin, err = buildTopcdn(ctx, work); err != nil {
			return err
		}
	}
	// The origin's key is made here so the harness can sign the write
	// orders the peers accept only from their origin.
	if b.signer, err = identity.Generate(nil); err != nil {
		return err
	}
	b.originKey = filepath.Join(work, "origin.key")
	if err := b.signer.Save(b.originKey); err != nil {
		return err
	}
	if b.readerKey, err = identity.Generate(nil); err != nil {
		return err
	}
	if b.striper, err = erasure.New(erasureDataShards, erasureParityShards,
		erasure.WithSegmentSize(erasureSegmentSize), erasure.WithChunkSize(erasureChunkSize)); err != nil {
		return err
	}
	if b.enc, err = reedsolomon.New(erasureDataShards, erasureParityShards); err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "generating %d MiB input and hashing its blocks ...\n", *sizeMiB)
	start := time.Now()
	b.in = makeErasureInput(int64(*sizeMiB)<<20, erasureBlockSize, datasetSeed)
	cidTime := time.Since(start)
	b.segs = segmentLengths(b.in.blockLens(), erasureSegmentSize)

	b.res = &erasureResult{
		Benchmark:        "erasure",
		Time:             time.Now().UTC(),
		Machine:          collectMachineInfo(ctx),
		Dir:              work,
		Filesystem:       fsName,
		Runs:             *runs,
		InputBytes:       int64(len(b.in.data)),
		InputSHA256:      b.in.sha256(),
		Blocks:           len(b.in.blocks),
		BlockSize:        erasureBlockSize,
		DataShards:       erasureDataShards,
		ParityShards:     erasureParityShards,
		SegmentSize:      erasureSegmentSize,
		ChunkSize:        erasureChunkSize,
		SegmentLengths:   b.segs,
		StoredBytes:      storedBytes(b.segs, erasureDataShards, erasureParityShards),
		CIDSeconds:       cidTime.Seconds(),
		StorageProcesses: b.peers,
		StoreConcurrency: max(16, 2*runtime.GOMAXPROCS(0)), // erasure's default (WithConcurrency)
		WriteConcurrency: b.writers,
		ReadWorkers:      b.readWorkers,
		HedgeAfter:       b.hedge.String(),
	}
	for _, name := range erasurePhases {
		b.res.Phases = append(b.res.Phases, erasurePhaseResult{Name: name})
	}
	fmt.Fprintf(os.Stderr, "input: %.1f MiB, %d blocks, %d segments, sha256 %s; work dir %s (%s)\n",
		mib(b.res.InputBytes), len(b.in.blocks), len(b.segs), b.res.InputSHA256[:16], work, fsName)

	for run := 1; run <= *runs; run++ {
		if err := b.run(ctx, run); err != nil {
			return fmt.Errorf("erasure: run %d: %w", run, err)
		}
	}
	b.summarize()
	printErasure(os.Stdout, b.res)
	if *jsonPath != "" {
		if err := writeJSON(*jsonPath, b.res); err != nil {
			return err
		}
	}
	return nil
}

// run performs one timed run of every phase.
func (b *erasureBench) run(ctx context.Context, run int) error {
	progress := func(name string, d time.Duration, extra string) {
		fmt.Fprintf(os.Stderr, "run %d/%d  %-24s %8.3fs %8.1f MiB/s%s\n", run, b.res.Runs, name, d.Seconds(),
			mib(b.res.InputBytes)/d.Seconds(), extra)
	}

	d, cpu, err := b.timeRawRS(ctx)
	if err != nil {
		return err
	}
	b.record(phaseRawRS, d, cpu)
	progress(phaseRawRS, d, "")

	d, cpu, err = b.timePlainWrite(ctx, filepath.Join(b.work, fmt.Sprintf("plain-%d", run)))
	if err != nil {
		return err
	}
	b.record(phasePlain, d, cpu)
	progress(phasePlain, d, "")

	return b.clusterRun(ctx, run, progress)
}

// record appends one run's measurement to a phase.
func (b *erasureBench) record(name string, wall time.Duration, cpu cpuUse) {
	p := b.res.phase(name)
	p.wall = append(p.wall, wall)
	if cpu.known {
		p.cpu = append(p.cpu, cpu.harness+cpu.services)
		p.svcCPU = append(p.svcCPU, cpu.services)
	}
}

// summarize fills in medians and ratios.
func (b *erasureBench) summarize() {
	for i := range b.res.Phases {
		p := &b.res.Phases[i]
		for _, d := range p.wall {
			p.Seconds = append(p.Seconds, d.Seconds())
		}
		if len(p.cpu) == len(p.wall) {
			for i, d := range p.cpu {
				p.CPUSeconds = append(p.CPUSeconds, d.Seconds())
				p.ServiceCPUSeconds = append(p.ServiceCPUSeconds, p.svcCPU[i].Seconds())
			}
		}
		p.MedianSeconds = median(p.wall).Seconds()
		if p.MedianSeconds > 0 {
			p.MiBPerSecond = mib(b.res.InputBytes) / p.MedianSeconds
		}
	}
	rate := func(name string) float64 { return b.res.phase(name).MiBPerSecond }
	b.res.StoreOverPlain = rate(phaseStore) / rate(phasePlain)
	b.res.DegradedOverFast = rate(phaseDegraded) / rate(phaseFast)
	b.res.RawOverStore = rate(phaseRawRS) / rate(phaseStore)
}

// timeRawRS encodes every segment of the input with reedsolomon directly
// (Split + Encode, in memory), as the Striper does before any hashing or
// I/O: the coding ceiling.
func (b *erasureBench) timeRawRS(ctx context.Context) (time.Duration, cpuUse, error) {
	runtime.GC()
	cpu := startCPU(nil)
	start := time.Now()
	var off int64
	for _, n := range b.segs {
		if err := ctx.Err(); err != nil {
			return 0, cpuUse{}, err
		}
		// The full slice expression matters: Split zeroes and fills the
		// capacity past len(segment) with padding and parity, which
		// here is the rest of the input.
		shards, err := b.enc.Split(b.in.data[off : off+n : off+n])
		if err != nil {
			return 0, cpuUse{}, fmt.Errorf("raw reedsolomon: split: %w", err)
		}
		if err := b.enc.Encode(shards); err != nil {
			return 0, cpuUse{}, fmt.Errorf("raw reedsolomon: encode: %w", err)
		}
		off += n
	}
	return time.Since(start), cpu.stop(), nil
}

// timePlainWrite writes as many bytes as striping stores, k+m files of
// every segment's shard size, in dir on the same filesystem as the peers,
// each file fsynced, then the directory: the physical limit.
func (b *erasureBench) timePlainWrite(ctx context.Context, dir string) (time.Duration, cpuUse, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, cpuUse{}, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	var sizes []int64
	for _, n := range b.segs {
		for range erasureDataShards + erasureParityShards {
			sizes = append(sizes, shardSize(n, erasureDataShards))
		}
	}
	runtime.GC()
	syncFilesystems()
	cpu := startCPU(nil)
	start := time.Now()
	if err := writeFilesSynced(ctx, dir, b.in.data, sizes, b.writers); err != nil {
		return 0, cpuUse{}, fmt.Errorf("plain write: %w", err)
	}
	return time.Since(start), cpu.stop(), nil
}

// writeFilesSynced creates one file per entry of sizes in dir, filled
// with bytes of src, with up to workers files in flight; each file is
// fsynced before it is closed, and dir after the last one.
func writeFilesSynced(ctx context.Context, dir string, src []byte, sizes []int64, workers int) error {
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(sizes) {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				if err := writeFileSynced(filepath.Join(dir, fmt.Sprintf("shard-%04d", i)), src, int64(i), sizes[i]); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return syncPath(dir)
}

// writeFileSynced writes size bytes of src (from an offset that depends on
// i, wrapping around) to a new file at path and fsyncs it.
func writeFileSynced(path string, src []byte, i, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	off := i * size % int64(len(src))
	for left := size; left > 0; {
		n := min(left, int64(len(src))-off)
		if _, err := f.Write(src[off : off+n]); err != nil {
			f.Close()
			return err
		}
		left -= n
		off = 0
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncPath fsyncs a file or directory.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// clusterRun starts an origin and the storage peers, then times the
// stripe-and-store, fast-path read and degraded read phases on them, and
// stops every process, whatever happens.
func (b *erasureBench) clusterRun(ctx context.Context, run int, progress func(string, time.Duration, string)) error {
	dir := filepath.Join(b.work, fmt.Sprintf("cluster-%d", run))
	c := &erasureCluster{}
	defer func() {
		c.stop()
		os.RemoveAll(dir)
	}()
	fmt.Fprintf(os.Stderr, "run %d/%d  starting an origin and %d storage peers ...\n", run, b.res.Runs, b.peers)
	if err := c.start(ctx, b.bin, dir, b.originKey, b.peers); err != nil {
		return err
	}
	ids, addrs, err := resolvePeers(ctx, storage.NewClient(b.readerKey, nil), c.peerURLs())
	if err != nil {
		return err
	}
	for i, id := range ids {
		c.peers[i].id = id
	}

	// Stripe and store.
	phaseCtx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	writeStore := &peerStore{client: storage.NewClient(b.signer, nil), addrs: addrs}
	runtime.GC()
	syncFilesystems()
	cpu := startCPU(c.pids())
	m, d, err := stripeAndStore(phaseCtx, b.striper, b.in, ids, writeStore)
	if err != nil {
		return fmt.Errorf("stripe-and-store: %w%s", err, c.logTails())
	}
	b.record(phaseStore, d, cpu.stop())
	progress(phaseStore, d, "")

	// Fast path: every peer up.
	readStore := &peerStore{client: storage.NewClient(b.readerKey, nil), addrs: addrs}
	r, err := erasure.NewReader(m, readStore)
	if err != nil {
		return err
	}
	phaseCtx, cancel = context.WithTimeout(ctx, b.timeout)
	defer cancel()
	runtime.GC()
	cpu = startCPU(c.pids())
	d, err = readAllBlocks(phaseCtx, r, b.in, b.readWorkers)
	if err != nil {
		return fmt.Errorf("fast-path read: %w%s", err, c.logTails())
	}
	b.record(phaseFast, d, cpu.stop())
	b.recordReads(phaseFast, readStore)
	progress(phaseFast, d, readStore.summary(b.res.InputBytes))

	// Degraded: kill the peers holding data shards 0..m-1 of segment 0.
	dead := map[string]bool{}
	var killed []string
	for i := range erasureParityShards {
		id := m.Segments[0].Shards[i].Peer
		dead[id] = true
		killed = append(killed, id)
	}
	for _, p := range c.peers {
		if dead[p.id.String()] {
			p.svc.kill()
		}
	}
	lost := lostShards(m, dead)
	deg := erasureDegradedRun{KilledPeers: killed, LostShards: lost, BlocksRebuilt: blocksNeedingRebuild(m, dead)}
	for _, l := range lost {
		for _, i := range l {
			if i < m.DataShards {
				deg.LostDataShards++
			}
		}
	}
	b.res.Degraded = append(b.res.Degraded, deg)
	fmt.Fprintf(os.Stderr, "run %d/%d  killed %d peers (holders of shards 0-%d of segment 0); lost shards per segment %v; %d blocks to rebuild\n",
		run, b.res.Runs, len(killed), erasureParityShards-1, lost, deg.BlocksRebuilt)
	degStore := &peerStore{client: storage.NewClient(b.readerKey, nil), addrs: addrs}
	r, err = erasure.NewReader(m, degStore, erasure.WithHedgeAfter(b.hedge))
	if err != nil {
		return err
	}
	phaseCtx, cancel = context.WithTimeout(ctx, b.timeout)
	defer cancel()
	runtime.GC()
	cpu = startCPU(c.pids())
	d, err = readAllBlocks(phaseCtx, r, b.in, b.readWorkers)
	if err != nil {
		return fmt.Errorf("degraded read: %w%s", err, c.logTails())
	}
	b.record(phaseDegraded, d, cpu.stop())
	b.recordReads(phaseDegraded, degStore)
	progress(phaseDegraded, d, degStore.summary(b.res.InputBytes))
	return nil
}

// recordReads appends a read phase's shard read counters.
func (b *erasureBench) recordReads(name string, s *peerStore) {
	p := b.res.phase(name)
	p.ShardReads = append(p.ShardReads, s.gets.Load())
	p.ShardReadBytes = append(p.ShardReadBytes, s.getBytes.Load())
	p.FailedShardReads = append(p.FailedShardReads, s.getErrors.Load())
}

// stripeAndStore packs the input's blocks into segments and stores them
// with Striper.StoreAll on the peers (as the origin does: packing and
// encoding the next segment overlaps uploading the last), building the
// manifest as it goes. The time runs from the first block added to the
// last segment stored.
func stripeAndStore(ctx context.Context, s *erasure.Striper, in *erasureInput, peers []peer.ID, store erasure.ShardStore) (*erasure.Manifest, time.Duration, error) {
	m := &erasure.Manifest{Root: in.blocks[len(in.blocks)-1].cid.String(), Created: time.Now(),
		DataShards: s.DataShards(), ParityShards: s.ParityShards(), ChunkSize: s.ChunkSize()}
	start := time.Now()
	blocks := func(yield func(cid.Cid, []byte) bool) {
		for i, blk := range in.blocks {
			if !yield(blk.cid, in.block(i)) {
				return
			}
		}
	}
	err := s.StoreAll(ctx, blocks, peers, store, func(seg erasure.Segment, refs []erasure.BlockRef) error {
		for i := range refs {
			refs[i].Segment = len(m.Segments)
		}
		m.Segments = append(m.Segments, seg)
		m.Blocks = append(m.Blocks, refs...)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	d := time.Since(start)
	if err := m.Validate(); err != nil {
		return nil, 0, err
	}
	return m, d, nil
}

// readAllBlocks reads every block of the input through r with workers
// goroutines, each checked against its CID (by ReadBlock) and against the
// input, and returns the time taken. The first failure stops the read.
func readAllBlocks(ctx context.Context, r *erasure.Reader, in *erasureInput, workers int) (time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(in.blocks) {
					return
				}
				blk := in.blocks[i]
				got, err := r.ReadBlock(ctx, blk.cid)
				if err == nil && !bytes.Equal(got, in.block(i)) {
					err = errors.New("bytes differ from the input")
				}
				if err != nil {
					cancel(fmt.Errorf("block %d (%s): %w", i, blk.cid, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return d, nil
}

// lostShards returns, per segment of m, the indexes of the shards held by
// a peer in dead.
func lostShards(m *erasure.Manifest, dead map[string]bool) [][]int {
	out := make([][]int, len(m.Segments))
	for si, seg := range m.Segments {
		out[si] = []int{}
		for i, sh := range seg.Shards {
			if dead[sh.Peer] {
				out[si] = append(out[si], i)
			}
		}
	}
	return out
}

// blocksNeedingRebuild counts the blocks of m with bytes on a data shard
// held by a peer in dead: those a reader must reconstruct.
func blocksNeedingRebuild(m *erasure.Manifest, dead map[string]bool) int {
	n := 0
	for _, b := range m.Blocks {
		if b.Length == 0 {
			continue
		}
		seg := m.Segments[b.Segment]
		first, last := b.Offset/seg.ShardSize, (b.Offset+b.Length-1)/seg.ShardSize
		for i := first; i <= last; i++ {
			if dead[seg.Shards[i].Peer] {
				n++
				break
			}
		}
	}
	return n
}

// peerStore is an erasure.ShardStore over real storage peers: orders are
// signed by its client's key (the origin's to write, a reader's to read),
// and a peer's address is looked up in addrs. It counts the reads.
type peerStore struct {
	client *storage.Client
	addrs  map[peer.ID]string // read-only once in use

	gets, getBytes, getErrors atomic.Int64
}

var _ erasure.ShardStore = (*peerStore)(nil)

func (s *peerStore) addr(p peer.ID) (string, error) {
	a, ok := s.addrs[p]
	if !ok {
		return "", fmt.Errorf("no address known for peer %s", p)
	}
	return a, nil
}

// PutShard implements erasure.ShardStore.
func (s *peerStore) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	a, err := s.addr(p)
	if err != nil {
		return err
	}
	return s.client.Put(ctx, p, a, shard, data)
}

// GetShard implements erasure.ShardStore.
func (s *peerStore) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	s.gets.Add(1)
	s.getBytes.Add(length)
	a, err := s.addr(p)
	if err == nil {
		var data []byte
		if data, err = s.client.GetRange(ctx, p, a, shard, off, length); err == nil {
			return data, nil
		}
	}
	s.getErrors.Add(1)
	return nil, err
}

// summary describes the reads made through s for the progress line.
func (s *peerStore) summary(input int64) string {
	return fmt.Sprintf("  (%d shard reads, %.2fx the input's bytes, %d failed)",
		s.gets.Load(), float64(s.getBytes.Load())/float64(input), s.getErrors.Load())
}

// resolvePeers asks each storage peer at urls for its peer ID (GET
// /status) and returns the IDs in the order of urls and the address of
// each. Two URLs answering with the same ID are an error.
func resolvePeers(ctx context.Context, c *storage.Client, urls []string) ([]peer.ID, map[peer.ID]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ids := make([]peer.ID, len(urls))
	addrs := make(map[peer.ID]string, len(urls))
	for i, u := range urls {
		st, err := c.Status(ctx, u)
		if err != nil {
			return nil, nil, err
		}
		id, err := peer.Decode(st.PeerID)
		if err != nil {
			return nil, nil, fmt.Errorf("status of %s: peer_id %q: %w", u, st.PeerID, err)
		}
		if prev, dup := addrs[id]; dup {
			return nil, nil, fmt.Errorf("peers at %s and %s both say they are %s", prev, u, id)
		}
		ids[i], addrs[id] = id, u
	}
	return ids, addrs, nil
}

// erasureInput is the benchmark's input: deterministic bytes cut into raw
// blocks.
type erasureInput struct {
	data   []byte
	blocks []inputBlock
}

// inputBlock is one raw block of the input: data[off:off+n].
type inputBlock struct {
	cid    cid.Cid
	off, n int
}

// makeErasureInput returns size bytes of the ChaCha8 keystream seeded by
// seed (label "erasure-input"), cut into blockSize raw blocks (the last
// may be shorter), each with its CIDv1 (raw, sha2-256).
func makeErasureInput(size int64, blockSize int, seed uint64) *erasureInput {
	in := &erasureInput{data: make([]byte, size)}
	rand.NewChaCha8(deriveSeed(seed, "erasure-input")).Read(in.data) // never fails
	prefix := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}
	for off := 0; off < len(in.data); off += blockSize {
		n := min(blockSize, len(in.data)-off)
		c, err := prefix.Sum(in.data[off : off+n])
		if err != nil {
			panic(err) // sha2-256 always works
		}
		in.blocks = append(in.blocks, inputBlock{cid: c, off: off, n: n})
	}
	return in
}

// block returns the bytes of block i, capped so nothing can append past
// them into the rest of the input.
func (in *erasureInput) block(i int) []byte {
	b := in.blocks[i]
	return in.data[b.off : b.off+b.n : b.off+b.n]
}

func (in *erasureInput) blockLens() []int {
	out := make([]int, len(in.blocks))
	for i, b := range in.blocks {
		out[i] = b.n
	}
	return out
}

func (in *erasureInput) sha256() string {
	sum := sha256.Sum256(in.data)
	return hex.EncodeToString(sum[:])
}

// segmentLengths returns the lengths of the segments erasure.Packer makes
// of blocks of the given lengths: blocks are appended until a segment
// reaches target bytes.
func segmentLengths(blockLens []int, target int64) []int64 {
	var out []int64
	var cur int64
	for _, n := range blockLens {
		cur += int64(n)
		if cur >= target {
			out = append(out, cur)
			cur = 0
		}
	}
	if cur > 0 {
		out = append(out, cur)
	}
	return out
}

// shardSize is the size of each shard of a segment of n bytes split into
// k data shards.
func shardSize(n int64, k int) int64 { return (n + int64(k) - 1) / int64(k) }

// storedBytes is what striping segments of the given lengths writes: k+m
// shards of each.
func storedBytes(segs []int64, k, m int) int64 {
	var total int64
	for _, n := range segs {
		total += int64(k+m) * shardSize(n, k)
	}
	return total
}

// cpuUse is the CPU time (user + system) used during a phase by the
// harness and by the topcdn processes.
type cpuUse struct {
	harness, services time.Duration
	known             bool
}

// cpuMeter measures the CPU time the harness and some processes use.
type cpuMeter struct {
	pids  []int
	start []time.Duration
	self  time.Duration
	ok    bool
}

// startCPU starts measuring the harness and pids.
func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: make([]time.Duration, len(pids))}
	m.self, m.ok = selfCPU()
	for i, pid := range pids {
		var ok bool
		m.start[i], ok = procCPU(pid)
		m.ok = m.ok && ok
	}
	return m
}

// stop returns the CPU time used since startCPU.
func (m *cpuMeter) stop() cpuUse {
	self, ok := selfCPU()
	if !ok || !m.ok {
		return cpuUse{}
	}
	u := cpuUse{harness: self - m.self, known: true}
	for i, pid := range m.pids {
		if t, ok := procCPU(pid); ok {
			u.services += t - m.start[i]
		}
	}
	return u
}

// service is a running topcdn service process.
type service struct {
	name string
	cmd  *exec.Cmd
	url  string
	logs *lineWriter
	done chan struct{} // closed once the process has exited and been waited for
}

// startService starts bin with args and waits until it prints "listening
// on URL". The service is returned whenever the process started, even
// with an error, so the caller can stop it.
func startService(ctx context.Context, name, bin string, args ...string) (*service, error) {
	urls := make(chan string, 1)
	s := &service{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{}),
		logs: newLineWriter(io.Discard, func() string { return "" })}
	s.cmd.Stdout = &listenWatcher{found: urls}
	s.cmd.Stderr = s.logs
	s.cmd.WaitDelay = 5 * time.Second
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	var waitErr error
	go func() {
		waitErr = s.cmd.Wait()
		close(s.done)
	}()
	timer := time.NewTimer(serviceStartTimeout)
	defer timer.Stop()
	select {
	case s.url = <-urls:
		return s, nil
	case <-s.done:
		return s, fmt.Errorf("%s exited before it was ready: %v%s", name, waitErr, s.logs.Tail())
	case <-timer.C:
		return s, fmt.Errorf("%s did not print %q within %s%s", name, "listening on", serviceStartTimeout, s.logs.Tail())
	case <-ctx.Done():
		return s, ctx.Err()
	}
}

// stop sends SIGTERM and waits for the process to exit, killing it after
// serviceStopGrace.
func (s *service) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.kill()
		return
	}
	t := time.NewTimer(serviceStopGrace)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		fmt.Fprintf(os.Stderr, "%s did not stop within %s of SIGTERM; killing it\n", s.name, serviceStopGrace)
		s.kill()
	}
}

// kill sends SIGKILL and waits for the process to exit.
func (s *service) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// exited reports whether the process has exited.
func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// listenWatcher is a service's stdout: it sends the URL of the first
// "listening on URL" line to found and discards everything else.
type listenWatcher struct {
	found chan<- string
	buf   []byte
	sent  bool
}

func (w *listenWatcher) Write(p []byte) (int, error) {
	if w.sent {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for !w.sent {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
		if u, ok := strings.CutPrefix(line, "listening on "); ok {
			w.found <- u
			w.sent = true
		}
	}
	if len(w.buf) > 64<<10 {
		w.buf = w.buf[len(w.buf)-4<<10:]
	}
	return len(p), nil
}

// erasureCluster is an origin and its storage peers, each a process.
type erasureCluster struct {
	mu     sync.Mutex
	all    []*service // every process started, for stop
	origin *service
	peers  []*clusterPeer
}

// clusterPeer is one storage peer of a cluster.
type clusterPeer struct {
	svc *service
	id  peer.ID
}

func (c *erasureCluster) add(s *service) {
	if s == nil {
		return
	}
	c.mu.Lock()
	c.all = append(c.all, s)
	c.mu.Unlock()
}

// start runs `topcdn origin --no-stripe` with the key at keyPath, then n
// `topcdn storage` peers pointed at it, all on loopback with data under
// dir. Whatever it returns, the caller must call stop.
func (c *erasureCluster) start(ctx context.Context, bin, dir, keyPath string, n int) error {
	var err error
	c.origin, err = startService(ctx, "origin", bin, "origin", "--no-stripe",
		"--data", filepath.Join(dir, "origin"), "--key", keyPath, "--listen", "127.0.0.1:0")
	c.add(c.origin)
	if err != nil {
		return err
	}
	c.peers = make([]*clusterPeer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("storage peer %d", i)
			s, err := startService(ctx, name, bin, "storage",
				"--data", filepath.Join(dir, fmt.Sprintf("peer-%02d", i)), "--listen", "127.0.0.1:0",
				"--origin", c.origin.url, "--capacity", erasurePeerCapacity, "--heartbeat", "1s")
			c.add(s)
			c.peers[i], errs[i] = &clusterPeer{svc: s}, err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// peerURLs returns the peers' base URLs, in start order.
func (c *erasureCluster) peerURLs() []string {
	out := make([]string, len(c.peers))
	for i, p := range c.peers {
		out[i] = p.svc.url
	}
	return out
}

// pids returns the process IDs of the services still running.
func (c *erasureCluster) pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, s := range c.all {
		if !s.exited() {
			out = append(out, s.cmd.Process.Pid)
		}
	}
	return out
}

// logTails returns the last log lines of the services that exited
// unexpectedly, for an error message.
func (c *erasureCluster) logTails() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, s := range c.all {
		if s.exited() && s.cmd.ProcessState != nil && !killedBySignal(s.cmd.ProcessState) {
			fmt.Fprintf(&b, "\n%s exited (%v):%s", s.name, s.cmd.ProcessState, s.logs.Tail())
		}
	}
	return b.String()
}

// killedBySignal reports whether a process ended by SIGKILL (as the
// degraded phase kills peers).
func killedBySignal(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// stop stops every process of the cluster, in parallel.
func (c *erasureCluster) stop() {
	c.mu.Lock()
	all := slices.Clone(c.all)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop()
		}()
	}
	wg.Wait()
}

// printErasure writes the human-readable report.
func printErasure(w io.Writer, res *erasureResult) {
	m := res.Machine
	fmt.Fprintf(w, "\nerasure benchmark: %d timed runs, %.0f MiB input (%d blocks of %d KiB, sha256 %s…)\n",
		res.Runs, mib(res.InputBytes), res.Blocks, res.BlockSize>>10, res.InputSHA256[:16])
	fmt.Fprintf(w, "code: %d+%d Reed-Solomon, %d segments of %.0f MiB, %d KiB chunks; striping stores %.1f MiB (%.2fx)\n",
		res.DataShards, res.ParityShards, len(res.SegmentLengths), mib(res.SegmentSize), res.ChunkSize>>10,
		mib(res.StoredBytes), float64(res.StoredBytes)/float64(res.InputBytes))
	fmt.Fprintf(w, "machine: %d CPUs", m.NumCPU)
	if m.CPUModel != "" {
		fmt.Fprintf(w, " (%s)", m.CPUModel)
	}
	fmt.Fprintf(w, ", %s/%s, %s", m.OS, m.Arch, m.GoVersion)
	if m.Commit != "" {
		fmt.Fprintf(w, ", topcdn %s", m.Commit)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "disk: %s (%s); plain writes and all %d storage peers on it\n", res.Dir, res.Filesystem, res.StorageProcesses)
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tmedian (s)\tMiB/s of input\tmedian CPU (s)\tof it topcdn procs (s)\tall runs (s)\t")
	for _, p := range res.Phases {
		all := make([]string, len(p.Seconds))
		for i, s := range p.Seconds {
			all[i] = fmt.Sprintf("%.3f", s)
		}
		cpu, svc := "-", "-"
		if len(p.CPUSeconds) > 0 {
			cpu = fmt.Sprintf("%.2f", medianSeconds(p.CPUSeconds))
			svc = fmt.Sprintf("%.2f", medianSeconds(p.ServiceCPUSeconds))
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.1f\t%s\t%s\t%s\t\n", p.Name, p.MedianSeconds, p.MiBPerSecond, cpu, svc, strings.Join(all, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)

	goal := func(r float64) string {
		if r >= 0.5 {
			return "meets goal"
		}
		return "BELOW goal"
	}
	fmt.Fprintf(w, "stripe-and-store / plain-fsync-write: %.3f (goal >= 0.5: %s)\n", res.StoreOverPlain, goal(res.StoreOverPlain))
	fmt.Fprintf(w, "degraded-read / fast-path-read:       %.3f (goal >= 0.5: %s)\n", res.DegradedOverFast, goal(res.DegradedOverFast))
	fmt.Fprintf(w, "raw-RS / stripe-and-store:            %.1f (coding ceiling over end-to-end striping, context)\n", res.RawOverStore)
	fmt.Fprintln(w)

	fmt.Fprintf(w, "raw reedsolomon: Split+Encode of each segment in memory, no hashing, no I/O.\n")
	fmt.Fprintf(w, "plain fsynced write: %d files (%d per segment, one per shard), %.1f MiB, %d at a time, each fsynced, then the directory.\n",
		len(res.SegmentLengths)*(res.DataShards+res.ParityShards), res.DataShards+res.ParityShards, mib(res.StoredBytes), res.WriteConcurrency)
	fmt.Fprintf(w, "stripe-and-store: Striper.StoreAll (pack, encode, hash and upload pipelined, two segments in flight) onto %d `topcdn storage` processes (each shard hashed, sent over loopback HTTP, fsynced by its peer), store concurrency %d; block CIDs hashed beforehand (%.3fs, untimed).\n",
		res.StorageProcesses, res.StoreConcurrency, res.CIDSeconds)
	readLine := func(name string) {
		p := res.phase(name)
		if len(p.ShardReads) == 0 {
			return
		}
		fmt.Fprintf(w, "%s: %d blocks, %d at a time; per run %s shard reads, %s x the input's bytes asked, %s failed.\n",
			name, res.Blocks, res.ReadWorkers, joinInts(p.ShardReads), joinRatios(p.ShardReadBytes, res.InputBytes),
			joinInts(p.FailedShardReads))
	}
	readLine(phaseFast)
	readLine(phaseDegraded)
	fmt.Fprintf(w, "degraded read: WithHedgeAfter(%s); per run, kill -9 the %d peers holding shards 0-%d of segment 0:\n",
		res.HedgeAfter, res.ParityShards, res.ParityShards-1)
	for i, d := range res.Degraded {
		fmt.Fprintf(w, "  run %d: lost shards per segment %v (%d data shards lost in all), %d of %d blocks to rebuild\n",
			i+1, d.LostShards, d.LostDataShards, d.BlocksRebuilt, res.Blocks)
	}
	fmt.Fprintf(w, "CPU: user + system of the harness plus every topcdn process alive in the phase (%d CPUs = %d CPU-seconds per second).\n", m.NumCPU, m.NumCPU)
	fmt.Fprintln(w, "note: wall-clock numbers are noisy (other load, CPU frequency, page cache, disk write-back and fsync latency")
	fmt.Fprintln(w, "of a shared virtual disk); the origin and peers share the machine's CPUs with the harness. Compare medians")
	fmt.Fprintln(w, "over several runs (-runs) on an idle machine, and only numbers taken on the same machine.")
}

func medianSeconds(s []float64) float64 {
	ds := make([]time.Duration, len(s))
	for i, v := range s {
		ds[i] = time.Duration(v * float64(time.Second))
	}
	return median(ds).Seconds()
}

func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, "/")
}

func joinRatios(v []int64, base int64) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprintf("%.2f", float64(n)/float64(base))
	}
	return strings.Join(s, "/")
}
