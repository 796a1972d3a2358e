package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/topcdn/topcdn/internal/tick"
)

// runEdgeMemory implements `bench edge-memory`: the edge's resident
// memory while it serves a working set four times its cache budget.
func runEdgeMemory(ctx context.Context, args []string) error {
	fset := newFlagSet("edge-memory",
		"Publishes a working set of random files (4 KiB to 2 MiB) and serves it through",
		"`topcdn edge` with a memory_cache budget: one pass over every file, then wrk",
		"requesting random files. Samples the edge's RSS throughout and reports the",
		"peak against the budget (goal: at most budget + 20%). Needs wrk.",
	)
	budget := fset.String("budget", "256MiB", "the edge's memory_cache budget")
	setSize := fset.String("set", "1GiB", "working set size")
	duration := fset.Duration("duration", 30*time.Second, "length of the random-load phase")
	conns := fset.Int("connections", 32, "wrk connections (-c)")
	topcdnBin := fset.String("topcdn", "", "use this prebuilt topcdn `binary` instead of building ./cmd/topcdn")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fset.Usage()
		return errUsage
	}
	budgetBytes, err := parseBytes(*budget)
	if err != nil {
		return fmt.Errorf("edge-memory: -budget: %w", err)
	}
	setBytes, err := parseBytes(*setSize)
	if err != nil {
		return fmt.Errorf("edge-memory: -set: %w", err)
	}
	wrkBin, _, err := edgeTools()
	if err != nil {
		return err
	}
	b := &edgeBench{ports: map[string]int{}, svcs: map[string]*service{}}
	cleanup, err := b.setUp(ctx, "edge-memory-", *topcdnBin)
	if err != nil {
		return err
	}
	defer cleanup()

	// The working set: random files, sizes uniform in [4 KiB, 2 MiB].
	site := filepath.Join(b.work, "set")
	var seed [32]byte
	src := rand.NewChaCha8(seed)
	rng := rand.New(src)
	buf := make([]byte, 1<<20)
	var files []string
	sizes := map[string]int64{}
	for total := int64(0); total < setBytes; {
		n := 4<<10 + rng.Int64N(2<<20-4<<10)
		name := fmt.Sprintf("f/%03d/%05d.bin", len(files)%256, len(files))
		p := filepath.Join(site, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeRandomFile(p, n, src, buf); err != nil {
			return err
		}
		files = append(files, name)
		sizes[name] = n
		total += n
	}
	fmt.Fprintf(os.Stderr, "working set: %d files, %s\n", len(files), fmtBytes(setBytes))

	// --set may exceed the default 10 GiB publisher quota.
	origin, key, err := b.startOrigin(ctx, b.topcdn, "origin", "--no-stripe", "--publisher-quota", "-1")
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "publishing ...")
	if _, err := runTimed(ctx, 10*time.Minute, nil, b.topcdn, "publish", site, "--name", "mem",
		"--origin", origin.url, "--key", key, "-Q"); err != nil {
		return err
	}
	if b.ports["edge"], err = freeLoopbackPort(); err != nil {
		return err
	}
	conf := fmt.Sprintf("{\n\tauto_https off\n\tadmin off\n\tpersist_config off\n}\nhttp://:%d {\n\tbind 127.0.0.1\n\ttopcdn {\n\t\torigin %s\n\t\tmemory_cache %d\n\t}\n}\n",
		b.ports["edge"], origin.url, budgetBytes)
	confFile := filepath.Join(b.work, "edge.Caddyfile")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return err
	}
	env := []string{"XDG_DATA_HOME=" + filepath.Join(b.work, "xdg-data"), "XDG_CONFIG_HOME=" + filepath.Join(b.work, "xdg-config")}
	if err := b.startServer(ctx, "edge", env, b.topcdn, "edge", "--config", confFile); err != nil {
		return err
	}
	pid := b.svcs["edge"].PID()
	base := fmt.Sprintf("http://127.0.0.1:%d", b.ports["edge"])
	idle := rssBytes(pid)

	var peak atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick.NowAndEvery(sampleCtx, 100*time.Millisecond, func(context.Context) {
			if r := rssBytes(pid); r > peak.Load() {
				peak.Store(r)
			}
		})
	})

	// Pass 1: every file once, checked byte for byte (by size and a
	// re-read of the source), 8 at a time.
	fmt.Fprintf(os.Stderr, "pass over all %d files ...\n", len(files))
	start := time.Now()
	if err := fetchAll(ctx, base, site, files, 8); err != nil {
		stopSampling()
		sampler.Wait()
		return fmt.Errorf("edge-memory: %w%s", err, b.procs.logTails())
	}
	passRSS := peak.Load()
	fmt.Fprintf(os.Stderr, "  %s in %s, peak RSS so far %s\n", fmtBytes(setBytes), time.Since(start).Round(time.Millisecond), fmtBytes(passRSS))

	// Pass 2: wrk over random files.
	script := filepath.Join(b.work, "random.lua")
	var lua strings.Builder
	lua.WriteString("paths = {\n")
	for _, f := range files {
		fmt.Fprintf(&lua, "  %q,\n", "/"+f)
	}
	lua.WriteString("}\nrequest = function()\n  return wrk.format(\"GET\", paths[math.random(#paths)], {Host = \"mem.cdn.test\"})\nend\n")
	if err := os.WriteFile(script, []byte(lua.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrk -t2 -c%d -d%s over random files ...\n", *conns, *duration)
	res, err := runTimed(ctx, *duration+time.Minute, nil, wrkBin, "-t2", "-c"+strconv.Itoa(*conns),
		"-d"+duration.String(), "--latency", "-s", script, base+"/")
	stopSampling()
	sampler.Wait()
	if err != nil {
		return fmt.Errorf("edge-memory: %w", err)
	}
	w, err := parseWrk(res.Stdout)
	if err != nil {
		return fmt.Errorf("edge-memory: %w", err)
	}
	hwm := procStatus(pid, "VmHWM")
	b.procs.stop()

	m := collectMachineInfo(ctx)
	limit := budgetBytes + budgetBytes/5
	fmt.Printf("edge memory: memory_cache %s, working set %s (%d files), %d CPUs %s, %s, commit %s\n",
		fmtBytes(budgetBytes), fmtBytes(setBytes), len(files), m.NumCPU, m.CPUModel, m.GoVersion, m.Commit)
	fmt.Printf("  RSS idle                %s\n", fmtBytes(idle))
	fmt.Printf("  RSS peak, pass over set %s\n", fmtBytes(passRSS))
	fmt.Printf("  RSS peak, random load   %s (VmHWM %s)\n", fmtBytes(peak.Load()), hwm)
	mean := float64(setBytes) / float64(len(files))
	fmt.Printf("  random load             %.0f req/s (about %.0f MiB/s), p99 %s, %d non-2xx\n", w.RPS, w.RPS*mean/(1<<20), w.P99, w.Non2xx)
	fmt.Printf("  peak / budget           %.2f (goal ≤ 1.20, i.e. ≤ %s)\n", float64(peak.Load())/float64(budgetBytes), fmtBytes(limit))
	if w.Non2xx > 0 {
		return fmt.Errorf("edge-memory: %d non-2xx responses under load", w.Non2xx)
	}
	if peak.Load() > limit {
		return fmt.Errorf("edge-memory: peak RSS %s is over budget + 20%% (%s)", fmtBytes(peak.Load()), fmtBytes(limit))
	}
	return nil
}

// fetchAll GETs every file through the edge, workers at a time, and checks
// each body against the file on disk.
func fetchAll(ctx context.Context, base, dir string, files []string, workers int) error {
	work := make(chan string)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: time.Minute}
	for range workers {
		wg.Go(func() {
			for f := range work {
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/"+f, nil)
				req.Host = "mem.cdn.test"
				resp, err := client.Do(req)
				if err != nil {
					errc <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errc <- fmt.Errorf("GET /%s: HTTP %d %v", f, resp.StatusCode, err)
					return
				}
				want, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					errc <- err
					return
				}
				if !bytes.Equal(got, want) {
					errc <- fmt.Errorf("GET /%s: %d bytes differ from the published file", f, len(got))
					return
				}
			}
		})
	}
	var err error
feed:
	for _, f := range files {
		select {
		case work <- f:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

// rssBytes returns a process's resident set size, or 0 if unknown.
func rssBytes(pid int) int64 {
	v := procStatus(pid, "VmRSS") // e.g. "123456 kB"
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		return 0
	}
	return kb << 10
}

// parseBytes parses sizes like 256MiB, 1GiB, 4096.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("want a positive size like 256MiB or 1GiB")
	}
	return n * mult, nil
}

// fmtBytes formats n in MiB.
func fmtBytes(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
