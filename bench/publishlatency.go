package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/topcdn/topcdn/devnet"
)

// latencyReport is what publish-latency writes with -json.
type latencyReport struct {
	Machine    machineInfo     `json:"machine"`
	NameStream bool            `json:"name_stream"`
	TTL        string          `json:"ttl"`
	Edges      []string        `json:"edges"`
	Publish    latencySeries   `json:"publish"`
	Purge      *latencySeries  `json:"purge,omitempty"`
	StreamUp   map[string]bool `json:"stream_up"`
}

// latencySeries is one kind of sample: per sample the latency of each
// edge, and the max over edges' nearest-rank percentiles.
type latencySeries struct {
	Samples [][]float64 `json:"samples_seconds"` // [sample][edge]
	P50     float64     `json:"p50_seconds"`
	P99     float64     `json:"p99_seconds"`
	Max     float64     `json:"max_seconds"`
}

// edgeHealth is the part of an edge's health document the benchmark reads.
type edgeHealth struct {
	NameStream  bool   `json:"name_stream"`
	NamesCursor *int64 `json:"names_cursor"`
}

func runPublishLatency(ctx context.Context, args []string) error {
	fset := newFlagSet("publish-latency",
		"Time from `topcdn publish` returning until every edge of a devnet serves the new",
		"version (max over edges; 20 publishes by default), and from `topcdn purge` returning",
		"until every edge applied it. A background reader keeps each edge's caches warm.",
	)
	n := fset.Int("n", 20, "publishes (and purges) to time")
	baseline := fset.Bool("baseline", false, "run the edges with name_stream off: names change as their TTLs run out (default -ttl 1m, -n 3, no purges)")
	ttl := fset.Duration("ttl", 0, "the published records' TTL (default 10m; 1m with -baseline)")
	purges := fset.Bool("purge", true, "also time purges (not with -baseline)")
	check := fset.Bool("check", false, "exit non-zero if the publish p99 is over 2 s")
	offset := fset.Int("port-offset", 300, "the devnet's port offset")
	jsonOut := fset.String("json", "", "write the samples and figures as JSON to this file")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fset.Usage()
		return errUsage
	}
	if *ttl == 0 {
		*ttl = 10 * time.Minute
		if *baseline {
			*ttl = time.Minute
		}
	}
	if *baseline {
		*purges = false
		if !isFlagSet(fset.Visit, "n") {
			*n = 3
		}
	}
	if *n < 1 {
		return errors.New("publish-latency: -n must be positive")
	}
	cache, err := cacheDir()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(cache, "publish-latency-work-")
	if err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	defer os.RemoveAll(work)
	bin, err := buildTopcdn(ctx, work)
	if err != nil {
		return err
	}
	// The devnet's CA, which it finds next to the topcdn binary.
	if _, err := goBuild(ctx, work, "pebble", "github.com/letsencrypt/pebble/v2/cmd/pebble"); err != nil {
		return err
	}
	info, stop, err := startDevnet(ctx, bin, filepath.Join(work, "devnet"), *offset, *baseline)
	if err != nil {
		return err
	}
	defer stop()
	site := info.Sites[0]
	edges := make([]string, len(info.Edges))
	for i, e := range info.Edges {
		edges[i] = e.URL
	}
	fmt.Fprintf(os.Stderr, "devnet up: %d edges, site %s\n", len(edges), site.Host)

	// Background readers: 20 requests/s per edge, as production traffic
	// keeps caches warm.
	rctx, rcancel := context.WithCancel(ctx)
	var readers sync.WaitGroup
	for _, e := range edges {
		readers.Go(func() {
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-rctx.Done():
					return
				case <-t.C:
					getSite(rctx, e, site.Host)
				}
			}
		})
	}
	defer func() { rcancel(); readers.Wait() }()

	rep := latencyReport{Machine: collectMachineInfo(ctx), NameStream: !*baseline, TTL: ttl.String(), Edges: edges, StreamUp: map[string]bool{}}
	siteDir := filepath.Join(work, "site")
	if err := os.MkdirAll(siteDir, 0o755); err != nil {
		return err
	}
	publishOnce := func(i int) (string, error) {
		marker := fmt.Sprintf("version %d (%d)", i, time.Now().UnixNano())
		page := "<!doctype html><title>bench</title><p>" + marker + "</p>\n"
		if err := os.WriteFile(filepath.Join(siteDir, "index.html"), []byte(page), 0o644); err != nil {
			return "", err
		}
		cmd := exec.CommandContext(ctx, bin, "publish", siteDir, "--name", site.Name, "--origin", info.Origin.URL,
			"--key", info.PublisherKey, "--ttl", ttl.String(), "-Q")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("publish %d: %w: %s", i, err, out)
		}
		return marker, nil
	}
	// A first publish at the benchmark's TTL, so every timed publish
	// follows one at that TTL (the previous record's TTL is what an edge
	// without the stream waits out).
	if m, err := publishOnce(0); err != nil {
		return err
	} else if _, err := waitEdges(ctx, edges, 3**ttl, func(ctx context.Context, e string) bool {
		return strings.Contains(getSite(ctx, e, site.Host), m)
	}); err != nil {
		return fmt.Errorf("the first publish never reached every edge: %w", err)
	}
	for i := 1; i <= *n; i++ {
		marker, err := publishOnce(i)
		if err != nil {
			return err
		}
		lat, err := waitEdges(ctx, edges, 3**ttl, func(ctx context.Context, e string) bool {
			return strings.Contains(getSite(ctx, e, site.Host), marker)
		})
		if err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
		rep.Publish.Samples = append(rep.Publish.Samples, seconds(lat))
		fmt.Fprintf(os.Stderr, "publish %2d: every edge in %s (%s)\n", i, slices.Max(lat).Round(time.Millisecond), fmtDurations(lat))
		time.Sleep(time.Second)
	}
	rep.Publish.summarize()

	if *purges {
		rep.Purge = &latencySeries{}
		for i := 1; i <= *n; i++ {
			cmd := exec.CommandContext(ctx, bin, "purge", "--name", site.Name, "--path", "/", "--origin", info.Origin.URL, "--key", info.PublisherKey)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("purge %d: %w: %s", i, err, out)
			}
			id, err := purgeID(string(out))
			if err != nil {
				return err
			}
			lat, err := waitEdges(ctx, edges, time.Minute, func(ctx context.Context, e string) bool {
				h, err := health(ctx, e)
				return err == nil && h.NamesCursor != nil && *h.NamesCursor >= id
			})
			if err != nil {
				return fmt.Errorf("purge %d: %w", i, err)
			}
			rep.Purge.Samples = append(rep.Purge.Samples, seconds(lat))
			fmt.Fprintf(os.Stderr, "purge   %2d: every edge in %s (%s)\n", i, slices.Max(lat).Round(time.Millisecond), fmtDurations(lat))
			// The origin takes at most 10 purges of a name a minute.
			time.Sleep(6500 * time.Millisecond)
		}
		rep.Purge.summarize()
	}
	for _, e := range edges {
		h, err := health(ctx, e)
		rep.StreamUp[e] = err == nil && h.NameStream
	}

	mode := "name stream on"
	if *baseline {
		mode = "name stream off (TTL expiry only)"
	}
	fmt.Printf("publish-latency: %d edges, %s, records' TTL %s, %d samples (max over edges)\n", len(edges), mode, ttl, *n)
	fmt.Printf("%-8s %10s %10s %10s\n", "", "p50", "p99", "max")
	fmt.Printf("%-8s %9.3fs %9.3fs %9.3fs\n", "publish", rep.Publish.P50, rep.Publish.P99, rep.Publish.Max)
	if rep.Purge != nil {
		fmt.Printf("%-8s %9.3fs %9.3fs %9.3fs\n", "purge", rep.Purge.P50, rep.Purge.P99, rep.Purge.Max)
	}
	fmt.Printf("stream up at the end: %v\n", rep.StreamUp)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *check && rep.Publish.P99 > 2 {
		return fmt.Errorf("publish p99 %.3fs is over the 2 s goal", rep.Publish.P99)
	}
	return nil
}

// startDevnet runs `topcdn devnet` in dir and waits until its devnet.json
// is written and every edge serves its site; stop ends it.
func startDevnet(ctx context.Context, bin, dir string, offset int, noStream bool) (*devnet.Info, func(), error) {
	// The readers fetch by name over plain HTTP.
	args := []string{"devnet", "--dir", dir, "--port-offset", strconv.Itoa(offset), "--no-https-redirect"}
	if noStream {
		args = append(args, "--no-name-stream")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "..", "devnet.out"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	fmt.Fprintf(os.Stderr, "starting %s ...\n", shellQuote(bin, args...))
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var info devnet.Info
		b, err := os.ReadFile(filepath.Join(dir, "devnet.json"))
		if err == nil && json.Unmarshal(b, &info) == nil && len(info.Sites) > 0 && len(info.Edges) > 0 {
			ready := true
			for _, e := range info.Edges {
				if getSite(ctx, e.URL, info.Sites[0].Host) == "" {
					ready = false
				}
			}
			if ready {
				return &info, stop, nil
			}
		}
		select {
		case <-exited:
			return nil, nil, fmt.Errorf("devnet exited; see %s", logf.Name())
		case <-ctx.Done():
			stop()
			return nil, nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("devnet not serving within 3 minutes; see %s", logf.Name())
		}
	}
}

// benchClient reaches the devnet's edges; no keep-alive limits matter at
// these rates.
var benchClient = &http.Client{Timeout: 5 * time.Second}

// getSite returns the body of the site's / on an edge ("" on any error).
func getSite(ctx context.Context, edge, host string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, edge+"/", nil)
	if err != nil {
		return ""
	}
	req.Host = host
	resp, err := benchClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// health reads an edge's health document.
func health(ctx context.Context, edge string) (edgeHealth, error) {
	var h edgeHealth
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, edge+"/.well-known/topcdn/health", nil)
	if err != nil {
		return h, err
	}
	resp, err := benchClient.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	return h, json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h)
}

// waitEdges polls every edge every 10 ms until done holds for it, and
// returns each edge's time from the call.
func waitEdges(ctx context.Context, edges []string, timeout time.Duration, done func(context.Context, string) bool) ([]time.Duration, error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lat := make([]time.Duration, len(edges))
	var wg sync.WaitGroup
	for i, e := range edges {
		wg.Go(func() {
			for ctx.Err() == nil {
				if done(ctx, e) {
					lat[i] = time.Since(t0)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, l := range lat {
		if l == 0 {
			return nil, fmt.Errorf("edge %s not there within %s", edges[i], timeout)
		}
	}
	return lat, nil
}

// purgeID reads the change ID `topcdn purge` printed.
func purgeID(out string) (int64, error) {
	i := strings.LastIndex(out, "change ")
	if i < 0 {
		return 0, fmt.Errorf("purge printed no change ID: %q", out)
	}
	return strconv.ParseInt(strings.TrimSpace(out[i+len("change "):]), 10, 64)
}

// summarize sets the nearest-rank p50 and p99 and the max of the samples'
// max over edges.
func (s *latencySeries) summarize() {
	var worst []float64
	for _, sample := range s.Samples {
		worst = append(worst, slices.Max(sample))
	}
	slices.Sort(worst)
	rank := func(p float64) float64 {
		k := int(p*float64(len(worst))+0.999999) - 1
		return worst[min(max(k, 0), len(worst)-1)]
	}
	s.P50, s.P99, s.Max = rank(0.50), rank(0.99), worst[len(worst)-1]
}

func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

func fmtDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(s, " ")
}

// isFlagSet reports whether the flag name was given on the command line.
func isFlagSet(visit func(func(*flag.Flag)), name string) bool {
	set := false
	visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
