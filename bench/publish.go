package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// errCIDMismatch is returned when the two tools disagree on the root CID.
var errCIDMismatch = errors.New("root CIDs differ")

// publishTool is one contender in the publish benchmark.
type publishTool struct {
	name string
	bin  string
	args []string
	env  []string
}

// publishToolResult holds one tool's measurements.
type publishToolResult struct {
	// Name is "kubo" or "topcdn".
	Name string `json:"name"`
	// Command is the measured command line.
	Command string `json:"command"`
	// RootCID is the CID the tool printed (identical across runs).
	RootCID string `json:"root_cid"`
	// WallSeconds and CPUSeconds are per timed run, in run order.
	WallSeconds []float64 `json:"wall_seconds"`
	CPUSeconds  []float64 `json:"cpu_seconds"`
	// MedianWallSeconds and MedianCPUSeconds summarize the runs.
	MedianWallSeconds float64 `json:"median_wall_seconds"`
	MedianCPUSeconds  float64 `json:"median_cpu_seconds"`
	// MiBPerSecond is the dataset size divided by MedianWallSeconds.
	MiBPerSecond float64 `json:"mib_per_second"`

	wall, cpu []time.Duration
}

// publishResult is the full report of the publish benchmark, as written by
// -json.
type publishResult struct {
	Benchmark   string              `json:"benchmark"`
	Time        time.Time           `json:"time"`
	Machine     machineInfo         `json:"machine"`
	KuboVersion string              `json:"kubo_version"`
	Dataset     dataset             `json:"dataset"`
	Runs        int                 `json:"runs"`
	Tools       []publishToolResult `json:"tools"`
	// ThroughputRatio is topcdn MiB/s divided by kubo MiB/s; the goal is
	// at least 1.
	ThroughputRatio float64 `json:"throughput_ratio"`
	// CIDsMatch reports whether both tools produced the same root CID.
	CIDsMatch bool `json:"cids_match"`
}

// runPublish implements `bench publish`: it compares how fast
// `topcdn publish --only-hash` and `ipfs add --only-hash` compute the root
// CID of the same directory, and checks that the CIDs agree.
func runPublish(ctx context.Context, args []string) error {
	fset := newFlagSet("publish",
		"Times `topcdn publish --only-hash -Q DIR` against",
		"`ipfs add -r -Q --only-hash --cid-version=1 DIR` (kubo "+kuboVersion+")",
		"on a deterministic synthetic site and checks both print the same root CID.",
	)
	runs := fset.Int("runs", 3, "timed runs per tool (after one untimed warm-up each)")
	jsonPath := fset.String("json", "", "also write results as JSON to `file`")
	sizeMiB := fset.Int("size-mib", 256, "dataset size in MiB")
	timeout := fset.Duration("timeout", 10*time.Minute, "timeout for each single run")
	topcdnBin := fset.String("topcdn", "", "use this prebuilt topcdn `binary` instead of building ./cmd/topcdn")
	kuboBin := fset.String("kubo", "", "use this ipfs `binary` instead of the cached kubo "+kuboVersion+" build")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fset.Usage()
		return errUsage
	}
	if *runs < 1 || *sizeMiB < 1 || *timeout <= 0 {
		return errors.New("publish: -runs, -size-mib and -timeout must be positive")
	}

	cache, err := cacheDir()
	if err != nil {
		return err
	}
	kubo, kuboVer := *kuboBin, ""
	if kubo == "" {
		kubo, kuboVer, err = ensureKubo(ctx, cache)
	} else {
		kuboVer, err = kuboVersionOf(ctx, kubo)
	}
	if err != nil {
		return err
	}

	work, err := os.MkdirTemp("", "topcdn-bench-publish-")
	if err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	defer os.RemoveAll(work)

	topcdn := *topcdnBin
	if topcdn == "" {
		if topcdn, err = buildTopcdn(ctx, work); err != nil {
			return err
		}
	}

	ds, err := ensureDataset(ctx, filepath.Join(cache, "datasets"), int64(*sizeMiB)<<20)
	if err != nil {
		return err
	}
	kuboEnv, err := initKuboRepo(ctx, kubo, filepath.Join(work, "kubo-repo"))
	if err != nil {
		return err
	}

	tools := []publishTool{
		{name: "kubo", bin: kubo, env: kuboEnv,
			args: []string{"add", "-r", "-Q", "--only-hash", "--cid-version=1", ds.Dir}},
		{name: "topcdn", bin: topcdn,
			args: []string{"publish", "--only-hash", "-Q", ds.Dir}},
	}
	res := publishResult{
		Benchmark:   "publish",
		Time:        time.Now().UTC(),
		Machine:     collectMachineInfo(ctx),
		KuboVersion: kuboVer,
		Dataset:     ds,
		Runs:        *runs,
		Tools:       make([]publishToolResult, len(tools)),
	}
	for i, t := range tools {
		res.Tools[i] = publishToolResult{Name: t.name, Command: shellQuote(filepath.Base(t.bin), t.args...)}
	}

	fmt.Fprintf(os.Stderr, "dataset: %s (%d files, %d dirs, %.1f MiB)\n", ds.Dir, ds.Files, ds.Dirs, mib(ds.Bytes))
	// One untimed warm-up per tool (page cache, binary loading), then the
	// timed runs alternating between tools so drift affects both equally.
	for round := 0; round <= *runs; round++ {
		for i, t := range tools {
			tr := &res.Tools[i]
			r, err := runTimed(ctx, *timeout, t.env, t.bin, t.args...)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			cid, err := parseCID(r.Stdout)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if round == 0 {
				tr.RootCID = cid
				fmt.Fprintf(os.Stderr, "warm-up  %-6s %7.3fs  %s\n", t.name, r.Wall.Seconds(), cid)
				continue
			}
			if cid != tr.RootCID {
				return fmt.Errorf("%s is not deterministic: printed %s, then %s", t.name, tr.RootCID, cid)
			}
			tr.wall = append(tr.wall, r.Wall)
			tr.cpu = append(tr.cpu, r.CPU)
			fmt.Fprintf(os.Stderr, "run %d/%d  %-6s %7.3fs  %7.1f MiB/s  cpu %.3fs\n",
				round, *runs, t.name, r.Wall.Seconds(), mib(ds.Bytes)/r.Wall.Seconds(), r.CPU.Seconds())
		}
	}

	for i := range res.Tools {
		tr := &res.Tools[i]
		for j := range tr.wall {
			tr.WallSeconds = append(tr.WallSeconds, tr.wall[j].Seconds())
			tr.CPUSeconds = append(tr.CPUSeconds, tr.cpu[j].Seconds())
		}
		tr.MedianWallSeconds = median(tr.wall).Seconds()
		tr.MedianCPUSeconds = median(tr.cpu).Seconds()
		tr.MiBPerSecond = mib(ds.Bytes) / tr.MedianWallSeconds
	}
	kuboRes, topcdnRes := res.Tools[0], res.Tools[1]
	res.ThroughputRatio = topcdnRes.MiBPerSecond / kuboRes.MiBPerSecond
	res.CIDsMatch = kuboRes.RootCID == topcdnRes.RootCID

	printPublish(os.Stdout, &res)
	if *jsonPath != "" {
		if err := writeJSON(*jsonPath, &res); err != nil {
			return err
		}
	}
	if !res.CIDsMatch {
		return fmt.Errorf("publish: %w: kubo %s, topcdn %s", errCIDMismatch, kuboRes.RootCID, topcdnRes.RootCID)
	}
	return nil
}

// parseCID extracts the root CID from quiet (-Q) output, which must be a
// single non-empty line.
func parseCID(stdout string) (string, error) {
	out := strings.TrimSpace(stdout)
	if out == "" || strings.ContainsAny(out, " \t\n") {
		return "", fmt.Errorf("expected only a root CID on stdout, got %q", out)
	}
	return out, nil
}

// kuboVersionOf returns the version reported by an arbitrary ipfs binary.
func kuboVersionOf(ctx context.Context, bin string) (string, error) {
	r, err := runTimed(ctx, 30*time.Second, nil, bin, "version")
	if err != nil {
		return "", fmt.Errorf("checking kubo version: %w", err)
	}
	return strings.TrimPrefix(strings.TrimSpace(r.Stdout), "ipfs version "), nil
}

// mib converts bytes to MiB.
func mib(n int64) float64 { return float64(n) / (1 << 20) }

// printPublish writes the human-readable report.
func printPublish(w io.Writer, res *publishResult) {
	m := res.Machine
	fmt.Fprintf(w, "\npublish benchmark: %d timed runs per tool, %.0f MiB in %d files / %d dirs\n",
		res.Runs, mib(res.Dataset.Bytes), res.Dataset.Files, res.Dataset.Dirs)
	fmt.Fprintf(w, "machine: %d CPUs", m.NumCPU)
	if m.CPUModel != "" {
		fmt.Fprintf(w, " (%s)", m.CPUModel)
	}
	fmt.Fprintf(w, ", %s/%s, %s, kubo %s", m.OS, m.Arch, m.GoVersion, res.KuboVersion)
	if m.Commit != "" {
		fmt.Fprintf(w, ", topcdn %s", m.Commit)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tool\tmedian wall (s)\tMiB/s\tmedian CPU (s)\tall runs (s)\t")
	for _, t := range res.Tools {
		all := make([]string, len(t.WallSeconds))
		for i, s := range t.WallSeconds {
			all[i] = fmt.Sprintf("%.3f", s)
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.1f\t%.3f\t%s\t\n",
			t.Name, t.MedianWallSeconds, t.MiBPerSecond, t.MedianCPUSeconds, strings.Join(all, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)

	verdict := "meets goal"
	if res.ThroughputRatio < 1 {
		verdict = "BELOW goal"
	}
	fmt.Fprintf(w, "throughput ratio topcdn/kubo: %.3f (goal >= 1.000: %s)\n", res.ThroughputRatio, verdict)
	for _, t := range res.Tools {
		fmt.Fprintf(w, "root CID %-6s %s\n", t.Name, t.RootCID)
	}
	if res.CIDsMatch {
		fmt.Fprintln(w, "root CIDs: identical")
	} else {
		fmt.Fprintln(w, "root CIDs: DIFFER")
	}
	fmt.Fprintln(w, "note: wall-clock numbers are noisy (CPU frequency, other load, page cache); compare medians over several runs on an idle machine.")
}

// writeJSON stores v as indented JSON at path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}
