package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/klauspost/reedsolomon"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/storageapi"
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
	// serviceStartTimeout bounds how long a server may take to be ready
	// (a topcdn service to print "listening on").
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
	fset := newFlagSet("erasure",
		"On one deterministic input, measures raw Reed-Solomon coding (10+4, 64 MiB",
		"segments), a plain fsynced write of as many bytes as striping stores, striping",
		"onto 14 real `topcdn storage` peers, reading every block back on the fast path,",
		"and reading them again with the peers of 4 data shards killed.",
	)
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
	ids, addrs, err := resolvePeers(ctx, storageapi.NewClient(b.readerKey, nil), c.peerURLs())
	if err != nil {
		return err
	}
	for i, id := range ids {
		c.peers[i].id = id
	}

	// Stripe and store.
	phaseCtx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	writeStore := &peerStore{client: storageapi.NewClient(b.signer, nil), addrs: addrs}
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
	if err := b.readPhase(ctx, c, m, addrs, phaseFast, progress); err != nil {
		return err
	}

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
			p.svc.Kill()
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
	return b.readPhase(ctx, c, m, addrs, phaseDegraded, progress, erasure.WithHedgeAfter(b.hedge))
}

// readPhase reads every input block from the cluster's peers through a new
// Reader of m and records the phase: time, CPU of the cluster, reads.
func (b *erasureBench) readPhase(ctx context.Context, c *erasureCluster, m *erasure.Manifest, addrs map[peer.ID]string,
	phase string, progress func(string, time.Duration, string), opts ...erasure.ReaderOption) error {
	store := &peerStore{client: storageapi.NewClient(b.readerKey, nil), addrs: addrs}
	r, err := erasure.NewReader(m, store, opts...)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	runtime.GC()
	cpu := startCPU(c.pids())
	d, err := readAllBlocks(ctx, r, b.in, b.readWorkers)
	if err != nil {
		return fmt.Errorf("%s: %w%s", phase, err, c.logTails())
	}
	b.record(phase, d, cpu.stop())
	b.recordReads(phase, store)
	progress(phase, d, store.summary(b.res.InputBytes))
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
