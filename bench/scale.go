package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dnsroute"
)

// scaleConfig is `bench scale`'s command line.
type scaleConfig struct {
	edges          []int
	names          int
	pgDSN          string
	pgFsync        bool
	originSQLite   bool
	claimWorkers   int
	apiRuns        int
	duration       time.Duration
	inflight       int
	dnsInflight    int
	addrs          int
	polls          int
	coldRounds     int
	ramp           int
	namesInterval  time.Duration
	records        int
	epoch          time.Duration
	billingWorkers int
	billing        bool
	timeout        time.Duration
	jsonOut        string
	cpuProfile     string
}

// scaleReport is what `bench scale` prints and writes with -json.
type scaleReport struct {
	Machine    machineInfo `json:"machine"`
	Started    time.Time   `json:"started"`
	Seconds    float64     `json:"wall_seconds"`
	Load1Start float64     `json:"load1_start"`
	Load1End   float64     `json:"load1_end"`
	// Flags are the command line's flags, defaults included.
	Flags    map[string]string `json:"flags"`
	OriginDB string            `json:"origin_db"`
	PGFsync  bool              `json:"postgres_fsync"`
	Names    namesResult       `json:"names"`
	Runs     []scaleRun        `json:"runs"`
}

// namesResult is the origin's figures at the drill's names.
type namesResult struct {
	Names        int     `json:"names"`
	ClaimWorkers int     `json:"claim_workers"`
	ClaimSeconds float64 `json:"claim_seconds"`
	ClaimsPerSec float64 `json:"claims_per_sec"`
	// ClaimRetries counts claims sent again after PostgreSQL refused them
	// as conflicting (sqldb.InTx gives up after five tries).
	ClaimRetries int64   `json:"claim_retries"`
	APIP50Ms     float64 `json:"names_api_p50_ms"`
	APIMaxMs     float64 `json:"names_api_max_ms"`
	APIBytes     int     `json:"names_api_bytes"`
	APIRuns      int     `json:"names_api_runs"`
}

// scaleRun is the figures at one edge count.
type scaleRun struct {
	Edges   int            `json:"edges"`
	Router  *routerResult  `json:"router"`
	Billing *billingResult `json:"billing,omitempty"`
	// RouterError and BillingError say why a phase has no figures: the
	// drill reports the failure and goes on with the other phases.
	RouterError  string `json:"router_error,omitempty"`
	BillingError string `json:"billing_error,omitempty"`
}

// runScale implements `bench scale`.
func runScale(ctx context.Context, args []string) error {
	if spec := os.Getenv(scaleEdgesEnv); spec != "" {
		return serveScaleEdges(spec)
	}
	fset := newFlagSet("scale",
		"The scale drill (issue #18): in one process over loopback, N simulated edges",
		"heartbeating one DNS router (heartbeats/s, answers/s with geo selection,",
		"memory), M names claimed at the origin (claim rate, names API, the",
		"router's names poll and rebuild), and one billing epoch of N edges'",
		"receipt batches ingested and settled on PostgreSQL; each figure at every",
		"-edges count, with the growth from the first to the last.",
	)
	edges := fset.String("edges", "1000,10000", "edge counts, comma-separated")
	cfg := &scaleConfig{}
	fset.IntVar(&cfg.names, "names", 100000, "published names claimed at the origin")
	fset.StringVar(&cfg.pgDSN, "pg", "", "PostgreSQL server DSN (postgres://…); default: a throwaway cluster (initdb, pg_ctl)")
	fset.BoolVar(&cfg.pgFsync, "pg-fsync", false, "the throwaway cluster flushes commits to disk (fsync=on), as a real server does; off, figures are CPU and SQL, not this machine's disk")
	fset.BoolVar(&cfg.originSQLite, "origin-sqlite", false, "the origin on SQLite (its default) instead of PostgreSQL")
	fset.IntVar(&cfg.claimWorkers, "claim-workers", 1, "concurrent ClaimName calls (on PostgreSQL, concurrent claims conflict on the billing log's counter row)")
	fset.IntVar(&cfg.apiRuns, "api-runs", 5, "GET /api/v1/names runs")
	fset.DurationVar(&cfg.duration, "duration", 30*time.Second, "sustained window: heartbeats and the DNS load together")
	fset.IntVar(&cfg.inflight, "inflight", 64, "heartbeats in flight (connections to the router)")
	fset.IntVar(&cfg.dnsInflight, "dns-inflight", 64, "DNS queries in flight")
	fset.IntVar(&cfg.addrs, "addrs", 1024, "distinct edge addresses (each a listener; edges share them beyond)")
	fset.IntVar(&cfg.polls, "polls", 3, "timed names polls and name changes per edge count")
	fset.IntVar(&cfg.coldRounds, "cold-rounds", 12, "heartbeat intervals (10 s) the edges get to turn healthy once all joined")
	fset.IntVar(&cfg.ramp, "ramp", 1000, "edges joining the fresh router per heartbeat interval (0: all at once)")
	fset.DurationVar(&cfg.namesInterval, "names-interval", dnsroute.DefaultNamesInterval, "the router's names poll interval (each poll may take as long, at least 5 s: the drill's router client's timeout follows it)")
	fset.IntVar(&cfg.records, "records", 50, "records in each edge's batch")
	fset.DurationVar(&cfg.epoch, "epoch", time.Minute, "billing epoch length")
	fset.IntVar(&cfg.billingWorkers, "billing-workers", 4, "concurrent admissions and batch ingests")
	fset.BoolVar(&cfg.billing, "billing", true, "run the billing epoch")
	fset.DurationVar(&cfg.timeout, "timeout", 30*time.Minute, "stop the drill after this long")
	fset.StringVar(&cfg.jsonOut, "json", "", "also write the figures as JSON to this file")
	fset.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole drill (go tool pprof) to this file")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	var err error
	if cfg.edges, err = parseSizes(*edges); err != nil {
		return fmt.Errorf("scale: -edges: %w", err)
	}
	if cfg.names < 1 || cfg.claimWorkers < 1 || cfg.apiRuns < 1 || cfg.inflight < 1 || cfg.dnsInflight < 1 || cfg.addrs < 4 ||
		cfg.polls < 1 || cfg.coldRounds < 1 || cfg.namesInterval < time.Second || cfg.records < 1 || cfg.records > billingapi.MaxRecords || cfg.billingWorkers < 1 ||
		cfg.epoch < time.Second || cfg.epoch%time.Second != 0 || cfg.duration < time.Second {
		return errors.New("scale: -names, -claim-workers, -api-runs, -inflight, -dns-inflight, -polls, -cold-rounds, -names-interval (≥ 1s), -records (at most " +
			strconv.Itoa(billingapi.MaxRecords) + "), -billing-workers positive; -addrs at least 4; -epoch whole seconds; -duration at least 1s")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := scaleDrill(ctx, cfg)
	if err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	rep.Flags = map[string]string{}
	fset.VisitAll(func(f *flag.Flag) { rep.Flags[f.Name] = f.Value.String() })
	printScale(os.Stdout, cfg, rep)
	if cfg.jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(cfg.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// scaleDrill runs the drill's phases in turn.
func scaleDrill(ctx context.Context, cfg *scaleConfig) (*scaleReport, error) {
	rep := &scaleReport{Machine: collectMachineInfo(ctx), Started: time.Now().UTC(), Load1Start: load1(), PGFsync: cfg.pgFsync}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	cache, err := cacheDir()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(cache, "scale-work-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "scale: "+format+"\n", args...) }
	logf("1-minute load %.2f on %d CPUs; open files limit %d", rep.Load1Start, runtime.NumCPU(), raiseFileLimit(1<<18))

	var pg *pgServer
	if cfg.pgDSN != "" {
		pg = &pgServer{dsn: cfg.pgDSN}
	} else if cfg.billing || !cfg.originSQLite {
		logf("starting a throwaway PostgreSQL cluster (fsync %v)", cfg.pgFsync)
		if pg, err = startPG(ctx, cfg.pgFsync); err != nil {
			return nil, err
		}
	}
	if pg != nil {
		defer pg.stop()
	}
	db := ""
	rep.OriginDB = "SQLite"
	if !cfg.originSQLite {
		if db, err = pg.createDB(ctx, "origin"); err != nil {
			return nil, err
		}
		rep.OriginDB = "PostgreSQL"
	}
	so, err := startScaleOrigin(ctx, originDir(work), db)
	if err != nil {
		return nil, err
	}
	defer so.close()

	logf("signing %d IPNS records, one key each", cfg.names)
	names, err := so.signNames(0, cfg.names, nameLabel)
	if err != nil {
		return nil, err
	}
	logf("claiming %d names (origin.ClaimName, %d at once, origin on %s)", cfg.names, cfg.claimWorkers, rep.OriginDB)
	d, err := so.claim(ctx, names, cfg.claimWorkers)
	if err != nil {
		return nil, err
	}
	names = nil
	rep.Names = namesResult{Names: cfg.names, ClaimWorkers: cfg.claimWorkers, ClaimSeconds: d.Seconds(),
		ClaimsPerSec: float64(cfg.names) / d.Seconds(), ClaimRetries: so.retries.Load(), APIRuns: cfg.apiRuns}
	logf("claimed in %.1f s (%.0f/s)", d.Seconds(), rep.Names.ClaimsPerSec)
	lat, size, err := so.namesAPI(ctx, cfg.apiRuns, cfg.names)
	if err != nil {
		return nil, err
	}
	rep.Names.APIP50Ms, rep.Names.APIMaxMs, rep.Names.APIBytes = msOf(percentile(lat, 0.5)), msOf(slices.Max(lat)), size
	logf("GET /api/v1/names: p50 %.0f ms, %d bytes", rep.Names.APIP50Ms, size)

	geo, err := dnsroute.OpenGeoDB(filepath.Join(root, "devnet", "geo.mmdb"))
	if err != nil {
		return nil, err
	}
	defer geo.Close()
	for k, n := range cfg.edges {
		// Names claimed during the phase: its timed polls and changes.
		perPhase := 2*cfg.polls - 1
		extra, err := so.signNames(cfg.names+k*perPhase, perPhase, func(i int) string { return fmt.Sprintf("x%06d", i) })
		if err != nil {
			return nil, err
		}
		// Billing first: a router that cannot keep up at n edges may
		// take minutes to stop, and its rebuilds would share the cores.
		run := scaleRun{Edges: n}
		if cfg.billing {
			if run.Billing, err = runBillingPhase(ctx, cfg, pg, n); err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%d edges: %w", n, err)
				}
				// Reported, and the drill goes on: the other figures stand.
				run.Billing, run.BillingError = nil, err.Error()
				logf("[%d edges] the billing phase failed: %v", n, err)
			}
		}
		logf("[%d edges] router phase", n)
		p, err := startRouterPhase(ctx, cfg, so, geo, n)
		if err != nil {
			return nil, err
		}
		run.Router, err = p.run(ctx, extra)
		p.stop()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%d edges: %w", n, err)
			}
			run.Router, run.RouterError = nil, err.Error()
			logf("[%d edges] the router phase failed: %v", n, err)
		}
		rep.Runs = append(rep.Runs, run)
		runtime.GC()
	}
	rep.Load1End = load1()
	rep.Seconds = time.Since(rep.Started).Seconds()
	return rep, nil
}

// parseSizes parses a comma-separated list of positive counts.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(strings.ReplaceAll(f, "_", "")))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// percentile is the nearest-rank p-quantile of ds (0 when empty).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(p*float64(len(s))+0.999999) - 1
	return s[min(max(k, 0), len(s)-1)]
}

func msOf(d time.Duration) float64 { return d.Seconds() * 1000 }

// medianOf is the median of vs (0 when empty).
func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// load1 is the 1-minute load average (0 if unknown).
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// growth formats last/first, or "" when first is 0.
func growth(first, last float64) string {
	if first == 0 {
		return ""
	}
	return fmt.Sprintf("×%.2f", last/first)
}

// scaleRow is one figure of the table: its label, format and value.
type scaleRow struct {
	label  string
	format string
	get    func(scaleRun) float64
}

// printScale writes the report as tables.
func printScale(w io.Writer, cfg *scaleConfig, rep *scaleReport) {
	fmt.Fprintf(w, "scale drill: %d names; %d CPUs, 1-minute load %.2f at start, %.2f at end; %s; %.0f s\n",
		rep.Names.Names, rep.Machine.NumCPU, rep.Load1Start, rep.Load1End, rep.Machine.GoVersion, rep.Seconds)
	fsync := "fsync on"
	if !rep.PGFsync {
		fsync = "fsync off"
	}
	if rep.OriginDB == "PostgreSQL" {
		fmt.Fprintf(w, "\norigin on PostgreSQL (%s)\n", fsync)
	} else {
		fmt.Fprintf(w, "\norigin on %s\n", rep.OriginDB)
	}
	n := rep.Names
	fmt.Fprintf(w, "  ClaimName, real IPNS records  %d in %.1f s: %.0f claims/s (%d at once; %d sent again after 5 serialization failures)\n",
		n.Names, n.ClaimSeconds, n.ClaimsPerSec, n.ClaimWorkers, n.ClaimRetries)
	fmt.Fprintf(w, "  GET /api/v1/names             p50 %.0f ms, max %.0f ms, %.1f MB (%d runs)\n", n.APIP50Ms, n.APIMaxMs, float64(n.APIBytes)/1e6, n.APIRuns)

	router := []scaleRow{
		{"start: edges joining per 10 s", "%.0f", func(r scaleRun) float64 { return float64(r.Router.Ramp) }},
		{"start: s until all healthy", "%.1f", func(r scaleRun) float64 { return r.Router.HealthySeconds }},
		{"start: heartbeat p99 ms", "%.1f", func(r scaleRun) float64 { return r.Router.ColdP99Ms }},
		{"start: heartbeats not accepted", "%.0f", func(r scaleRun) float64 { return float64(r.Router.ColdFailed) }},
		{"heartbeats offered/s (every 10 s)", "%.0f", func(r scaleRun) float64 { return r.Router.OfferedPerSec }},
		{"heartbeats accepted/s", "%.0f", func(r scaleRun) float64 { return r.Router.AcceptedPerSec }},
		{"heartbeat p50 ms", "%.2f", func(r scaleRun) float64 { return r.Router.HeartbeatP50Ms }},
		{"heartbeat p99 ms", "%.2f", func(r scaleRun) float64 { return r.Router.HeartbeatP99Ms }},
		{"heartbeats not accepted", "%.0f", func(r scaleRun) float64 { return float64(r.Router.Failed) }},
		{"heartbeats not accepted, whole phase", "%.0f", func(r scaleRun) float64 { return float64(r.Router.FailedAll) }},
		{"burst heartbeats/s (64 in flight)", "%.0f", func(r scaleRun) float64 { return r.Router.BurstPerSec }},
		{"burst p99 ms", "%.1f", func(r scaleRun) float64 { return r.Router.BurstP99Ms }},
		{"burst heartbeats not accepted", "%.0f", func(r scaleRun) float64 { return float64(r.Router.BurstFailed) }},
		{"AcceptHeartbeat p50 µs (no change)", "%.0f", func(r scaleRun) float64 { return r.Router.AcceptPlainUs }},
		{"AcceptHeartbeat p50 ms (re-rank, no names yet)", "%.2f", func(r scaleRun) float64 { return r.Router.AcceptRebuildEdgesMs }},
		{"AcceptHeartbeat p50 ms (re-rank: rebuild)", "%.2f", func(r scaleRun) float64 { return r.Router.AcceptRebuildMs }},
		{"names poll ms (fetch+parse+rebuild), median", "%.0f", func(r scaleRun) float64 { return medianOf(r.Router.NamesPollMs) }},
		{"new name answered after ms (stream), median", "%.1f", func(r scaleRun) float64 { return medianOf(r.Router.NameChangeMs) }},
		{"DNS answers/s (geo, ECS)", "%.0f", func(r scaleRun) float64 { return r.Router.DNSPerSec }},
		{"DNS p50 ms", "%.2f", func(r scaleRun) float64 { return r.Router.DNSP50Ms }},
		{"DNS p99 ms", "%.2f", func(r scaleRun) float64 { return r.Router.DNSP99Ms }},
		{"DNS failed or lost", "%.0f", func(r scaleRun) float64 { return float64(r.Router.DNSFailed) }},
		{"DNS first edge in the client's region %", "%.1f", func(r scaleRun) float64 { return 100 * r.Router.DNSInRegion }},
		{"DNS from the response cache %", "%.1f", func(r scaleRun) float64 { return 100 * r.Router.DNSCacheHit }},
		{"health probes answered/s", "%.0f", func(r scaleRun) float64 { return r.Router.ProbesPerSec }},
		{"CPU of all cores, sustained: drill process %", "%.0f", func(r scaleRun) float64 { return 100 * r.Router.CPUShare }},
		{"CPU of all cores, sustained: edges' server %", "%.0f", func(r scaleRun) float64 { return 100 * r.Router.EdgesCPUShare }},
		{"router heap in use after GC per edge, bytes", "%.0f", func(r scaleRun) float64 { return r.Router.HeapPerEdgeBytes }},
		{"router heap in use after GC per name, bytes", "%.0f", func(r scaleRun) float64 { return r.Router.HeapPerNameBytes }},
		{"router live heap per edge, bytes", "%.0f", func(r scaleRun) float64 { return r.Router.LivePerEdgeBytes }},
		{"router live heap per name, bytes", "%.0f", func(r scaleRun) float64 { return r.Router.LivePerNameBytes }},
		{"router heap in use after GC, edges and names, MB", "%.1f", func(r scaleRun) float64 { return float64(r.Router.HeapTotalBytes) / 1e6 }},
		{"router live heap, edges and names, MB", "%.1f", func(r scaleRun) float64 { return float64(r.Router.LiveTotalBytes) / 1e6 }},
	}
	fmt.Fprintf(w, "\nrouter: %d names (polled every %s), heartbeats every 10 s, %d in flight; %d DNS queries in flight\n",
		rep.Names.Names, cfg.namesInterval, cfg.inflight, cfg.dnsInflight)
	printRows(w, rep.Runs, func(r scaleRun) bool { return r.Router != nil }, router)
	for _, r := range rep.Runs {
		if r.RouterError != "" {
			fmt.Fprintf(w, "  %d edges: the router phase failed: %s\n", r.Edges, r.RouterError)
		}
	}
	if cfg.billing {
		fmt.Fprintf(w, "\nbilling on PostgreSQL (%s): one epoch of %s, one batch of %d records per edge, %d at once\n",
			fsync, cfg.epoch, cfg.records, cfg.billingWorkers)
		printRows(w, rep.Runs, func(r scaleRun) bool { return r.Billing != nil }, []scaleRow{
			{"admissions s", "%.1f", func(r scaleRun) float64 { return r.Billing.AdmitSeconds }},
			{"ingest s", "%.1f", func(r scaleRun) float64 { return r.Billing.IngestSeconds }},
			{"ingest records/s", "%.0f", func(r scaleRun) float64 { return r.Billing.RecordsPerSec }},
			{"settle s", "%.1f", func(r scaleRun) float64 { return r.Billing.SettleSeconds }},
			{"settle records/s", "%.0f", func(r scaleRun) float64 { return r.Billing.SettleRecordsPerSec }},
			{"(ingest + settle) / epoch", "%.2f", func(r scaleRun) float64 { return r.Billing.EpochShare }},
			{"PostgreSQL CPU s (ingest, settle)", "%.1f", func(r scaleRun) float64 { return r.Billing.PostgresCPUSeconds }},
		})
		for _, r := range rep.Runs {
			if r.BillingError != "" {
				fmt.Fprintf(w, "  %d edges: the billing phase failed: %s\n", r.Edges, r.BillingError)
			}
		}
	}
}

// printRows writes rows with a column per run and the growth from the
// first run to the last; a run without the figures (has false) shows
// "failed" and no growth.
func printRows(w io.Writer, runs []scaleRun, has func(scaleRun) bool, rows []scaleRow) {
	width := 0
	for _, row := range rows {
		width = max(width, utf8.RuneCountInString(row.label))
	}
	pad := func(s string, n int) string { return s + strings.Repeat(" ", max(n-utf8.RuneCountInString(s), 0)) }
	line := "  " + pad("", width)
	for _, r := range runs {
		line += fmt.Sprintf("%14s", strconv.Itoa(r.Edges)+" edges")
	}
	if len(runs) > 1 {
		line += fmt.Sprintf("%10s", "growth")
	}
	fmt.Fprintln(w, line)
	for _, row := range rows {
		line := "  " + pad(row.label, width)
		for _, r := range runs {
			v := "failed"
			if has(r) {
				v = fmt.Sprintf(row.format, row.get(r))
			}
			line += fmt.Sprintf("%14s", v)
		}
		if first, last := runs[0], runs[len(runs)-1]; len(runs) > 1 && has(first) && has(last) {
			line += fmt.Sprintf("%10s", growth(row.get(first), row.get(last)))
		}
		fmt.Fprintln(w, line)
	}
}
