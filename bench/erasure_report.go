package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

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
