package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseDnsperf(t *testing.T) {
	out := `Statistics:

  Queries sent:         328864
  Queries completed:    328864 (100.00%)
  Queries lost:         12 (0.00%)

  Response codes:       NOERROR 296054 (90.02%), NXDOMAIN 32810 (9.98%)
  Average packet size:  request 33, response 65
  Run time (s):         3.000133
  Queries per second:   109616.460000

  Average Latency (s):  0.000676 (min 0.000012, max 0.004178)
  Latency StdDev (s):   0.000220
`
	tests := []struct {
		name    string
		in      string
		want    dnsperfResult
		wantErr bool
	}{
		{"a run", out, dnsperfResult{QPS: 109616.46, AvgLat: 676 * time.Microsecond, Sent: 328864, Lost: 12,
			Responses: "NOERROR 296054 (90.02%), NXDOMAIN 32810 (9.98%)"}, false},
		{"no statistics", "[Status] Command line: dnsperf\n", dnsperfResult{}, true},
		{"no latency", strings.ReplaceAll(out, "Average Latency", "Avg"), dnsperfResult{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDnsperf(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error: %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("%+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDNSQueryFileAndZone(t *testing.T) {
	b := &dnsBench{}
	if err := b.makeNames(3); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b.queryFile())), "\n")
	if len(lines) != 3*10+2 {
		t.Errorf("%d query lines, want 32", len(lines))
	}
	z := b.zoneFile()
	for _, n := range b.names {
		if !strings.Contains(z, n.Name+" IN A 127.1.0.1\n") || !strings.Contains(z, "dnslink=/ipns/"+n.IPNS) {
			t.Errorf("zone lacks %s:\n%s", n.Name, z)
		}
	}
}
