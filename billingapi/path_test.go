package billingapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/topcdn/topcdn/internal/testkit"
)

func TestCutPath(t *testing.T) {
	long := "/" + strings.Repeat("a", MaxField)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "/docs/index.html", "/docs/index.html"},
		{"exactly the limit", long[:MaxField], long[:MaxField]},
		{"one byte over: cut", long[:MaxField+1], long[:MaxField]},
		// "é" is 2 bytes: one that would straddle the limit goes whole.
		{"cut at a character boundary", "/" + strings.Repeat("a", MaxField-2) + "é", "/" + strings.Repeat("a", MaxField-2)},
		{"invalid UTF-8 replaced", "/a\xffb", "/a\uFFFDb"},
		{"a run of invalid bytes is one replacement", "/a\xff\xfe\xfdb", "/a\uFFFDb"},
		// Each "\xff" becomes 3 bytes, so the cut falls inside the 64th.
		{"replaced, then cut", "/" + strings.Repeat("a\xff", MaxField), "/" + strings.Repeat("a\uFFFD", 63) + "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CutPath(tc.in)
			if got != tc.want || len(got) > MaxField || !utf8.ValidString(got) {
				t.Fatalf("CutPath(%q) = %q (%d bytes), want %q", tc.in, got, len(got), tc.want)
			}
			r := Record{Serial: 1, CID: "bafy", Path: got, Status: 200, Client: make([]byte, ClientHashSize)}
			if err := r.Validate(); err != nil {
				t.Fatalf("a cut path does not validate: %v", err)
			}
		})
	}
	r := Record{Serial: 1, CID: "bafy", Path: long, Status: 200, Client: make([]byte, ClientHashSize)}
	if err := r.Validate(); err == nil {
		t.Fatal("a record with a path over MaxField validates")
	}
}

// TestLeafWithoutPath: a record without a path has the leaf it had before
// paths existed; a path changes the leaf.
func TestLeafWithoutPath(t *testing.T) {
	r := Record{Serial: 7, Name: "blog", CID: "bafy", Root: "bafr", Bytes: 10, Status: 200, Time: 1000, Client: make([]byte, ClientHashSize)}
	var old []byte
	old = append(old, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 3, 0xe8, 0, 200)
	for _, f := range []string{string(r.Client), r.Name, r.CID, r.Root} {
		old = append(old, byte(len(f)>>8), byte(len(f)))
		old = append(old, f...)
	}
	if got := r.AppendLeaf(nil); string(got) != string(old) {
		t.Fatalf("leaf without a path changed:\n%x\nwant\n%x", got, old)
	}
	r.Path = "/a"
	if got := r.AppendLeaf(nil); string(got) != string(append(old, 0, 2, '/', 'a')) {
		t.Fatalf("leaf with a path: %x", got)
	}
}

// worstString is n bytes that JSON encodes at the most bytes each.
func worstString(n int, c byte) string { return strings.Repeat(string(c), n) }

// TestRecordBound: recordBound bounds the JSON of every record, whatever
// its text fields hold.
func TestRecordBound(t *testing.T) {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	fields := []string{"", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "/docs/getting-started.html",
		worstString(MaxField, '<'), worstString(MaxField, 0), worstString(MaxField, '"'), worstString(MaxField, 0xff),
		strings.Repeat("\u2028", MaxField/3), strings.Repeat("é", MaxField/2), string(all[:MaxField]), "日本語/パス"}
	for _, name := range fields {
		for _, path := range fields {
			s := Served{Name: name, CID: "x" + name, Root: name, Path: path, Bytes: -1 << 62, Status: 599}
			r := Record{Serial: 1<<63 - 1, Name: s.Name, CID: s.CID, Root: s.Root, Path: s.Path, Bytes: s.Bytes, Status: s.Status,
				Time: -1 << 62, Client: make([]byte, ClientHashSize)}
			b, err := json.Marshal(&r)
			if err != nil {
				t.Fatal(err)
			}
			if got, bound := len(b)+1, recordBound(&s); got > bound {
				t.Fatalf("record of %d JSON bytes (with its comma), bound %d: name %q path %q", got, bound, name, path)
			}
		}
	}
}

func TestPlanParts(t *testing.T) {
	small := Served{CID: "c"}                                 // recordOverhead + 1
	big := Served{CID: "c", Path: worstString(MaxField, '<')} // recordOverhead + 1 + 6*MaxField
	recs := func(s Served, n int) []pendingRecord {
		rs := make([]pendingRecord, n)
		for i := range rs {
			rs[i].s = s
		}
		return rs
	}
	bigSize := recordBound(&big)
	tests := []struct {
		name         string
		recs         []pendingRecord
		part, budget int
		wantParts    []int // records per part
		wantOver     int
	}{
		{"none", nil, 10, 1 << 20, nil, 0},
		{"by count", recs(small, 25), 10, 1 << 20, []int{10, 10, 5}, 0},
		{"by size", recs(big, 10), 100, 3 * bigSize, []int{3, 3, 3, 1}, 0},
		{"one record over the budget still goes alone", recs(big, 2), 100, bigSize - 1, []int{1, 1}, 0},
		{"over MaxParts: the rest is dropped", recs(small, MaxParts+5), 1, 1 << 20, nil, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parts, over := planParts(tc.recs, tc.part, tc.budget)
			if len(over) != tc.wantOver {
				t.Fatalf("%d over, want %d", len(over), tc.wantOver)
			}
			total := len(over)
			for i, p := range parts {
				total += len(p)
				if tc.wantParts != nil && (len(parts) != len(tc.wantParts) || len(p) != tc.wantParts[i]) {
					t.Fatalf("parts of %v records, want %v", lens(parts), tc.wantParts)
				}
			}
			if total != len(tc.recs) || len(parts) > MaxParts {
				t.Fatalf("%d parts holding %d of %d records", len(parts), total, len(tc.recs))
			}
		})
	}
}

func lens(parts [][]pendingRecord) []int {
	var out []int
	for _, p := range parts {
		out = append(out, len(p))
	}
	return out
}

// TestReporterSplitsBySize: records with the longest, most escaped paths
// go out in as many batches as their size needs, each within the bound
// the budget promises for MaxBatchSize (here a small budget stands for
// recordBudget), and every record arrives with its path.
func TestReporterSplitsBySize(t *testing.T) {
	key := testkit.Key(t, 34)
	var (
		mu     sync.Mutex
		bodies [][]byte
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	defer srv.Close()
	const budget = 64 << 10
	// The longest URL, every byte of it escaped to 6, is the batch's worst
	// case.
	rep := NewReporter(key, srv.URL, WithEpoch(time.Hour), WithPublicURL("http://e.test/"+worstString(MaxField-14, '&')))
	rep.opts.budget = budget
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rep.Run(ctx) }()
	const n = 40
	for i := range n {
		rep.Observe(Served{Name: worstString(MaxField, '<'), CID: worstString(MaxField, '>'), Root: worstString(MaxField, '&'),
			Path: "/" + worstString(MaxField+50, '<') + string(rune('a'+i%26)), Bytes: 1, Status: 200, Time: time.Now(),
			Client: netip.MustParseAddr("192.0.2.1")})
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	limit := 4*((budget+batchOverhead+2)/3) + envelopeOverhead
	got := 0
	for i, body := range bodies {
		if len(body) > limit {
			t.Fatalf("batch %d is %d bytes, over the %d its budget promises", i, len(body), limit)
		}
		_, b, _, err := DecodeBatch(body)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if b.Part != i {
			t.Fatalf("batch %d is part %d", i, b.Part)
		}
		for _, r := range b.Records {
			if len(r.Path) != MaxField || !strings.HasPrefix(r.Path, "/<<") {
				t.Fatalf("record path %q (%d bytes): want the first %d bytes", r.Path, len(r.Path), MaxField)
			}
		}
		got += len(b.Records)
	}
	if got != n || len(bodies) < 2 {
		t.Fatalf("%d batches with %d records, want %d records in several", len(bodies), got, n)
	}
	if limit > MaxBatchSize || 4*((recordBudget+batchOverhead+2)/3)+envelopeOverhead > MaxBatchSize {
		t.Fatalf("the default budget %d does not keep a batch within %d", recordBudget, MaxBatchSize)
	}
}
