package main

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const wrkSample = `Running 10s test @ http://127.0.0.1:40077/obj-1k.bin
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   658.12us  236.44us   5.01ms   72.34%
    Req/Sec    64.25k     3.10k   70.01k    80.00%
  Latency Distribution
     50%  612.00us
     75%  780.00us
     90%    1.01ms
     99%    1.70ms
  639351 requests in 10.00s, 780.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  63936.12
Transfer/sec:     78.01MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{RPS: 63936.12, Avg: 658120 * time.Nanosecond, P99: 1700 * time.Microsecond,
		Requests: 639351, Non2xx: 7, SocketErrs: 5}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Fatal("no error for output without Requests/sec")
	}
}

func TestParseEdgeMetrics(t *testing.T) {
	in := `# HELP topcdn_edge_cache_hits_total Blocks served from a cache tier (memory, disk).
# TYPE topcdn_edge_cache_hits_total counter
topcdn_edge_cache_hits_total{tier="disk"} 2
topcdn_edge_cache_hits_total{tier="memory"} 40
topcdn_edge_cache_misses_total 12
topcdn_edge_cache_misses_total_other 99
topcdn_edge_upstream_fetch_seconds_sum 0.5
`
	got := parseEdgeMetrics(strings.NewReader(in))
	if got["block cache hits"] != 42 || got["upstream blocks"] != 12 || got["upstream seconds"] != 0.5 || len(got) != 3 {
		t.Fatalf("got %v", got)
	}
}

func TestEdgeObjects(t *testing.T) {
	for _, o := range edgeObjects {
		a, b := edgeObjectBytes(o), edgeObjectBytes(o)
		if len(a) != o.size || !bytes.Equal(a, b) {
			t.Fatalf("%s: %d bytes, deterministic %v", o.name, len(a), bytes.Equal(a, b))
		}
		body := respondBody(o.size)
		if len(body) != o.size || bytes.ContainsAny(body, "\"\\ \n\t{}") {
			t.Fatalf("%s: respond body unfit for a quoted Caddyfile token", o.name)
		}
	}
	if bytes.Equal(edgeObjectBytes(edgeObjects[0]), edgeObjectBytes(edgeObjects[1])[:edgeObjects[0].size]) {
		t.Fatal("objects share a prefix")
	}
}

func TestEdgeCellMedian(t *testing.T) {
	c := &edgeCell{runs: []wrkResult{{RPS: 3}, {RPS: 1, Non2xx: 4}, {RPS: 2}}}
	if m := c.median(); m.RPS != 2 || m.Non2xx != 4 {
		t.Fatalf("median %+v", m)
	}
	if m := (*edgeCell)(nil).median(); m.RPS != 0 {
		t.Fatalf("nil median %+v", m)
	}
}

// TestEdgePrintPairs: the goals are judged on the median of the paired
// run ratios (run i of one server over run i of the other), and the report
// shows each run's ratio and the ratio of the medians too.
func TestEdgePrintPairs(t *testing.T) {
	b := &edgeBench{cells: map[string]map[string]*edgeCell{}}
	for _, s := range edgeServers {
		b.cells[s.key] = map[string]*edgeCell{}
		for _, o := range edgeObjects {
			b.cells[s.key][o.name] = &edgeCell{runs: []wrkResult{{RPS: 100}, {RPS: 100}, {RPS: 100}}}
		}
	}
	// The machine slows down in runs 2 and 3, for both servers alike.
	b.cells[srvEdgeHit][edgeObjects[0].name].runs = []wrkResult{{RPS: 95}, {RPS: 60}, {RPS: 50}}
	b.cells[srvRespond][edgeObjects[0].name].runs = []wrkResult{{RPS: 100}, {RPS: 65}, {RPS: 52}}
	// CPU per request is the median over runs that measured it.
	b.cells[srvFileSrv][edgeObjects[2].name].runs = []wrkResult{{RPS: 100, CPUPerReq: 900 * time.Microsecond},
		{RPS: 100, CPUPerReq: 950 * time.Microsecond}, {RPS: 100, CPUPerReq: 930 * time.Microsecond}}
	var out strings.Builder
	b.print(&out, time.Second, 3, 64, 1, map[string]string{})
	got := strings.Join(strings.Fields(out.String()), " ") // table spacing aside
	for _, want := range []string{
		"edge hits / caddy respond ≥ 0.9 0.95 meets goal", // paired: 0.95 0.92 0.96
		"edge hits / caddy respond, 1KiB: runs 0.95 0.92 0.96; medians 0.92",
		"edge hits / caddy file_server, 1KiB: runs 0.95 0.60 0.50; medians 0.60",
		"edge hits / caddy file_server ≥ 1.2 0.60 BELOW goal 1.00 BELOW goal",
		"caddy-file_server - - 930", // no CPU measured at 1 and 64 KiB
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestProcTreeCPU: a server's CPU time counts its child processes' (nginx
// serves from workers while its master waits).
func TestProcTreeCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	child := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		busy, ok := procCPU(child.Process.Pid)
		if !ok {
			t.Fatal("no CPU time for the child")
		}
		if busy >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child used only %s", busy)
		}
		time.Sleep(20 * time.Millisecond)
	}
	self, _ := procCPU(os.Getpid())
	tree, ok := procTreeCPU(os.Getpid())
	if !ok || tree-self < 50*time.Millisecond {
		t.Fatalf("tree %s, self %s: the child's CPU is not counted", tree, self)
	}
}

func TestPinned(t *testing.T) {
	tests := []struct {
		cpus     string
		wantBin  string
		wantArgs []string
	}{
		{"", "wrk", []string{"-t1", "url"}},
		{"1", "taskset", []string{"-c", "1", "wrk", "-t1", "url"}},
		{"0,2", "taskset", []string{"-c", "0,2", "wrk", "-t1", "url"}},
	}
	for _, tc := range tests {
		bin, args := pinned(tc.cpus, "wrk", "-t1", "url")
		if bin != tc.wantBin || !slices.Equal(args, tc.wantArgs) {
			t.Errorf("pinned(%q): %s %v, want %s %v", tc.cpus, bin, args, tc.wantBin, tc.wantArgs)
		}
	}
}
