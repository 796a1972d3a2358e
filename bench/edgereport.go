package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The edge benchmark's report: the tables, ratios and logs it prints.

// printEdgeCounts shows, per edge and object, where its blocks came from.
func (b *edgeBench) printEdgeCounts(w io.Writer) {
	if len(b.edgeCounts) == 0 {
		return
	}
	fmt.Fprintln(w, "\nedge counters during the wrk runs, per request (from the edges' Prometheus metrics):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "edge\tobject\trequests\tupstream blocks\tblock cache hits\tresponse cache hits\tupstream ms/block\t")
	for _, key := range []string{srvEdgeHit, srvEdgeMiss, srvEdgeHitTLS} {
		for _, o := range edgeObjects {
			c := b.edgeCounts[key+" "+o.name]
			if c == nil || c["requests"] == 0 {
				continue
			}
			n := c["requests"]
			ms := "-"
			if c["upstream blocks"] > 0 {
				ms = fmt.Sprintf("%.2f", 1000*c["upstream seconds"]/c["upstream blocks"])
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%s\t\n", key, o.label, n,
				c["upstream blocks"]/n, c["block cache hits"]/n, c["response cache hits"]/n, ms)
		}
	}
	tw.Flush()
}

// printCPU prints each server's CPU time per request (median of runs):
// where wrk, on the same cores, is what limits the request rate (large
// objects), it shows what each server spends that the rates do not.
func (b *edgeBench) printCPU(w io.Writer) {
	fmt.Fprintln(w, "\nserver CPU per request, µs (user + system, from /proc; median of runs):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\t"+strings.Join(labels(), "\t")+"\t")
	for _, s := range edgeServers {
		if b.cells[s.key] == nil {
			continue // not loaded (-only)
		}
		fmt.Fprintf(tw, "%s\t", s.key)
		for _, o := range edgeObjects {
			if cpu := b.cpuPerReq(s.key, o.name); cpu > 0 {
				fmt.Fprintf(tw, "%.0f\t", float64(cpu)/float64(time.Microsecond))
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// cpuPerReq returns the median of a cell's server CPU per request over
// the runs that measured it, 0 if none did.
func (b *edgeBench) cpuPerReq(srv, obj string) time.Duration {
	var cpu []time.Duration
	for _, r := range b.cells[srv][obj].runsOrNil() {
		cpu = append(cpu, r.CPUPerReq)
	}
	return medianPositive(cpu)
}

// medianPositive returns the median of the positive durations of ds (the
// runs that measured one), 0 if there are none.
func medianPositive(ds []time.Duration) time.Duration {
	var pos []time.Duration
	for _, d := range ds {
		if d > 0 {
			pos = append(pos, d)
		}
	}
	if len(pos) == 0 {
		return 0
	}
	slices.Sort(pos)
	return pos[len(pos)/2]
}

// pairedRatios returns a[i]/c[i] for every run i both measured (c[i] >
// 0) and the median of those ratios; 0 and nil if there are none.
func pairedRatios(a, c []float64) (med float64, each []float64) {
	for i := range min(len(a), len(c)) {
		if c[i] > 0 {
			each = append(each, a[i]/c[i])
		}
	}
	if len(each) == 0 {
		return 0, nil
	}
	sorted := slices.Sorted(slices.Values(each))
	return sorted[len(sorted)/2], each
}

// printCPURatios prints, for each goal's pair, the baseline's server CPU
// per request over the edge's: not a goal, but where other work on the
// machine moves the request rates run to run, what each server spends
// per request holds much steadier.
func (b *edgeBench) printCPURatios(w io.Writer) {
	pairs := []struct {
		name, a, c string
		sizes      []edgeObject
	}{
		{"edge hits / caddy file_server", srvEdgeHit, srvFileSrv, edgeObjects},
		{"edge hits / caddy respond", srvEdgeHit, srvRespond, edgeObjects[:1]},
		{"edge misses / caddy reverse_proxy", srvEdgeMiss, srvRevProxy, edgeObjects},
		{"HTTPS: edge hits / caddy file_server", srvEdgeHitTLS, srvFileSrvTLS, edgeObjects},
	}
	header := false
	for _, p := range pairs {
		var out []string
		for _, o := range p.sizes {
			if ca, cc := b.cpuPerReq(p.a, o.name), b.cpuPerReq(p.c, o.name); ca > 0 && cc > 0 {
				out = append(out, fmt.Sprintf("%s %.2f", o.label, float64(cc)/float64(ca)))
			}
		}
		if len(out) == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nserver CPU per request, the baseline's over the edge's (> 1: the edge spends less; medians of runs):")
			header = true
		}
		fmt.Fprintf(w, "  %s: %s\n", p.name, strings.Join(out, ", "))
	}
}

// print writes the results table and the ratios.
func (b *edgeBench) print(w io.Writer, d time.Duration, runs, conns, threads int, rss map[string]string) {
	m := collectMachineInfo(context.Background())
	fmt.Fprintf(w, "edge benchmark: wrk -t%d -c%d -d%s --latency, %d run(s) (median), %d CPUs %s, %s, commit %s\n",
		threads, conns, d, runs, m.NumCPU, m.CPUModel, m.GoVersion, m.Commit)
	if b.serverCPUs != "" {
		fmt.Fprintf(w, "servers (and the origin) pinned to CPU %s, wrk to CPU %s (taskset)\n", b.serverCPUs, b.clientCPUs)
	} else {
		fmt.Fprintln(w, "not pinned: wrk and the servers share every CPU")
	}
	fmt.Fprintln(w)
	for _, s := range edgeServers {
		if b.cells[s.key] != nil {
			fmt.Fprintf(w, "  %-24s %s\n", s.key, s.what)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "server\t")
	for _, o := range edgeObjects {
		fmt.Fprintf(tw, "%s req/s\tavg\tp99\t", o.label)
	}
	fmt.Fprintln(tw, "errors\tpeak RSS\t")
	for _, s := range edgeServers {
		if b.cells[s.key] == nil {
			continue
		}
		fmt.Fprintf(tw, "%s\t", s.key)
		var errs int64
		for _, o := range edgeObjects {
			r := b.cells[s.key][o.name].median()
			fmt.Fprintf(tw, "%.0f\t%s\t%s\t", r.RPS, fmtDur(r.Avg), fmtDur(r.P99))
			errs += r.Non2xx + r.SocketErrs
		}
		v := rss[s.key]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t\n", errs, v)
	}
	tw.Flush()
	fmt.Fprint(w, "\n(errors: non-2xx responses + socket errors, summed over sizes; peak RSS is VmHWM after all runs")
	if b.cells[srvRespond] != nil {
		fmt.Fprint(w, ";\n caddy-respond serves an ASCII body of the object's size; the goal compares it at 1 KiB only")
	}
	fmt.Fprintln(w, ")")
	b.printCPU(w)

	rps := func(srv, obj string) float64 { return b.cells[srv][obj].median().RPS }
	ratio := func(a, c float64) string {
		if c == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", a/c)
	}
	// The goals are judged on the median of the paired ratios: run i of
	// every server is measured within the same minute, so run i of one
	// server over run i of the other cancels the machine's drift between
	// runs, which a ratio of two medians (taken from different runs) does
	// not. Both are printed.
	rates := func(srv string, o edgeObject) []float64 {
		var r []float64
		for _, x := range b.cells[srv][o.name].runsOrNil() {
			r = append(r, x.RPS)
		}
		return r
	}
	paired := func(a, c string, o edgeObject) (med float64, each []float64) {
		return pairedRatios(rates(a, o), rates(c, o))
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ratio (median of paired runs)	goal	"+strings.Join(labels(), "\t")+"\t")
	row := func(name string, goal float64, a, c string, sizes []edgeObject) {
		if b.cells[a] == nil || b.cells[c] == nil {
			return
		}
		fmt.Fprintf(tw, "%s\t≥ %.1f\t", name, goal)
		for _, o := range edgeObjects {
			med, each := paired(a, c, o)
			switch {
			case !slices.Contains(sizes, o):
				fmt.Fprint(tw, "-\t")
			case each == nil:
				fmt.Fprint(tw, "n/a\t")
			case med >= goal:
				fmt.Fprintf(tw, "%.2f meets goal\t", med)
			default:
				fmt.Fprintf(tw, "%.2f BELOW goal\t", med)
			}
		}
		fmt.Fprintln(tw)
	}
	row("edge hits / caddy file_server", 1.2, srvEdgeHit, srvFileSrv, edgeObjects)
	row("edge hits / caddy respond", 0.9, srvEdgeHit, srvRespond, edgeObjects[:1])
	row("edge misses / caddy reverse_proxy", 0.5, srvEdgeMiss, srvRevProxy, edgeObjects)
	row("HTTPS: edge hits / caddy file_server", 1.2, srvEdgeHitTLS, srvFileSrvTLS, edgeObjects)
	if b.cells[srvEdgeHit] != nil && b.cells[srvNginx] != nil {
		fmt.Fprintf(tw, "(edge hits / nginx)\t\t")
		for _, o := range edgeObjects {
			med, each := paired(srvEdgeHit, srvNginx, o)
			if each == nil {
				fmt.Fprint(tw, "n/a\t")
				continue
			}
			fmt.Fprintf(tw, "%.2f\t", med)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	b.printCPURatios(w)
	if runs < 2 {
		return
	}
	fmt.Fprintln(w, "\neach run's ratio, and the ratio of the medians in the table above:")
	show := func(name, a, c string, sizes []edgeObject) {
		for _, o := range sizes {
			_, each := paired(a, c, o)
			if each == nil {
				continue
			}
			var out []string
			for _, r := range each {
				out = append(out, fmt.Sprintf("%.2f", r))
			}
			fmt.Fprintf(w, "  %s, %s: runs %s; medians %s\n", name, o.label, strings.Join(out, " "), ratio(rps(a, o.name), rps(c, o.name)))
		}
	}
	show("edge hits / caddy file_server", srvEdgeHit, srvFileSrv, edgeObjects)
	show("edge hits / caddy respond", srvEdgeHit, srvRespond, edgeObjects[:1])
	show("edge misses / caddy reverse_proxy", srvEdgeMiss, srvRevProxy, edgeObjects)
	show("HTTPS: edge hits / caddy file_server", srvEdgeHitTLS, srvFileSrvTLS, edgeObjects)
}

func labels() []string {
	var s []string
	for _, o := range edgeObjects {
		s = append(s, o.label)
	}
	return s
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
}

// reportLog summarizes the warnings and errors an edge logged.
func (b *edgeBench) reportLog(w io.Writer, key string) {
	data, err := os.ReadFile(filepath.Join(b.work, key+".log"))
	if err != nil {
		return
	}
	counts := map[string]int{}
	var samples []string
	for _, line := range strings.Split(string(data), "\n") {
		if benignCaddyWarning(line) {
			continue
		}
		for _, lvl := range []string{"warn", "error", "panic", "fatal"} {
			if strings.Contains(line, `"level":"`+lvl+`"`) || strings.Contains(line, "\t"+strings.ToUpper(lvl)+"\t") {
				counts[lvl]++
				if len(samples) < 3 {
					samples = append(samples, truncate(line, 300))
				}
			}
		}
	}
	if len(counts) == 0 {
		fmt.Fprintf(w, "%s log: no warnings or errors\n", key)
		return
	}
	fmt.Fprintf(w, "%s log: %v; first lines:\n", key, counts)
	for _, s := range samples {
		fmt.Fprintf(w, "    %s\n", s)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// benignCaddyWarning reports whether a log line is one of the warnings
// every plain-HTTP Caddy without admin endpoint logs at start.
func benignCaddyWarning(line string) bool {
	for _, m := range []string{`"msg":"admin endpoint disabled"`, `"msg":"HTTP/2 skipped because it requires TLS"`,
		`"msg":"HTTP/3 skipped because it requires TLS"`} {
		if strings.Contains(line, m) {
			return true
		}
	}
	return false
}
