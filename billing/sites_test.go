package billing

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// namedContent is a fakeContent that also knows the keys' names, as the
// origin's billing log tells them.
type namedContent struct {
	*fakeContent
	names map[string]string
}

func (n namedContent) SiteNames(ctx context.Context, keys []string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if name, ok := n.names[k]; ok {
			out[k] = name
		}
	}
	return out
}

var _ SiteNames = namedContent{}

// sitesFixture is a ledger with an account that publishes blog with its
// own key and docs with a linked key, a key once linked to it and
// unlinked last month, and a stranger's site; records of the three sites
// in the last epoch of January and the first two of February; the clock
// in the third minute of February 2030 (1 min epochs).
type sitesFixture struct {
	tl                                   *testLedger
	url                                  string
	acct, docs, gone, stranger           *identity.Key
	jan, feb0, feb1                      int64 // epochs
	content                              *fakeContent
	blogLast, docsLast, docsFeb, blogFeb billingapi.Traffic
}

func newSitesFixture(t *testing.T, dsn string, names map[string]string) *sitesFixture {
	t.Helper()
	f := &sitesFixture{acct: testkit.Key(t, 80), docs: testkit.Key(t, 81), gone: testkit.Key(t, 82), stranger: testkit.Key(t, 83),
		content: newFakeContent()}
	var content Content = f.content
	if names != nil {
		content = namedContent{f.content, names}
	}
	f.tl = newLedgerWith(t, dsn, Config{}, content)
	f.url = newHTTPLedger(t, f.tl)
	ctx := context.Background()
	edge := testkit.Key(t, 84)
	f.tl.admit(t, edge)
	objs := map[string]int64{"c1": 1000, "c2": 1000, "c3": 1000}
	f.content.publish("blog", f.acct.ID, objs)
	f.content.publish("docs", f.docs.ID, map[string]int64{"d1": 1000})
	f.content.publish("wiki", f.stranger.ID, map[string]int64{"w1": 1000})
	f.content.publish("old", f.gone.ID, map[string]int64{"o1": 1000})

	// January: gone is linked, then unlinked; its link ends in January.
	f.tl.setNow(time.Date(2030, 1, 31, 23, 56, 30, 0, time.UTC))
	if _, err := f.tl.LinkKey(ctx, f.acct.ID.String(), signLink(t, f.acct, f.gone, f.gone, f.tl.clock(), nil)); err != nil {
		t.Fatal(err)
	}
	f.tl.setNow(f.tl.clock().Add(time.Minute))
	unlink := mustSign(t, f.acct, billingapi.TypeKeyUnlink, billingapi.KeyUnlink{Account: f.acct.ID.String(), Key: f.gone.ID.String(),
		Time: f.tl.clock().UTC()})
	if _, err := f.tl.UnlinkKey(ctx, f.acct.ID.String(), f.gone.ID.String(), unlink); err != nil {
		t.Fatal(err)
	}
	f.tl.setNow(time.Date(2030, 2, 1, 0, 2, 30, 0, time.UTC))
	if _, err := f.tl.LinkKey(ctx, f.acct.ID.String(), signLink(t, f.acct, f.docs, f.docs, f.tl.clock(), nil)); err != nil {
		t.Fatal(err)
	}
	f.jan = time.Date(2030, 1, 31, 23, 59, 0, 0, time.UTC).Unix()
	f.feb0, f.feb1 = f.jan+60, f.jan+120
	pathRec := func(serial uint64, name, c string, n int64, epoch int64, path string) billingapi.Record {
		r := rec(serial, name, c, n, epoch)
		r.Path = path
		return r
	}
	batches := []struct {
		epoch int64
		recs  []billingapi.Record
	}{
		{f.jan, []billingapi.Record{pathRec(1, "blog", "c1", 100, f.jan, "/"), pathRec(2, "old", "o1", 50, f.jan, "/old")}},
		{f.feb0, []billingapi.Record{pathRec(3, "blog", "c1", 200, f.feb0, "/"), pathRec(4, "blog", "c2", 900, f.feb0, "/big.bin"),
			pathRec(5, "docs", "d1", 30, f.feb0, "/docs/"), pathRec(6, "wiki", "w1", 70, f.feb0, "/")}},
		{f.feb1, []billingapi.Record{pathRec(7, "blog", "c1", 200, f.feb1, "/"), pathRec(8, "blog", "c1", 200, f.feb1, "/"),
			pathRec(9, "blog", "c3", 10, f.feb1, ""),                                                          // an edge that sends no path
			pathRec(10, "docs", "d1", 40, f.feb1, "/docs/"), pathRec(11, "docs", "d1", 0, f.feb1, "/docs/")}}, // no body: not stored
	}
	for i, b := range batches {
		res, err := f.tl.IngestBatch(ctx, signBatch(t, edge, b.epoch, uint64(i+1), b.recs), netip.Addr{})
		if err != nil || len(res.Rejected) != 0 {
			t.Fatalf("batch of epoch %d: %+v, %v", b.epoch, res, err)
		}
	}
	f.blogLast, f.docsLast = billingapi.Traffic{Bytes: 410, Requests: 3}, billingapi.Traffic{Bytes: 40, Requests: 1}
	f.blogFeb, f.docsFeb = billingapi.Traffic{Bytes: 1510, Requests: 5}, billingapi.Traffic{Bytes: 70, Requests: 2}
	return f
}

// getJSON GETs url and decodes its answer into v if it is a 200; it
// returns the status and the body.
func getJSON(t *testing.T, url string, v any) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v\n%s", url, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// TestAccountSites: an account's own key and its linked keys (not a key
// unlinked last month, not another account's), each with what was served
// in the last ended epoch and this month, and its name from the origin's
// log or, without it, the edges' records.
func TestAccountSites(t *testing.T) { testAccountSites(t, func(*testing.T) string { return "" }) }

// TestAccountSitesPostgres runs the same rows on PostgreSQL.
func TestAccountSitesPostgres(t *testing.T) { testAccountSites(t, pgDSN) }

func testAccountSites(t *testing.T, dsn func(*testing.T) string) {
	plain := newSitesFixture(t, dsn(t), nil)
	f := plain
	named := newSitesFixture(t, dsn(t), map[string]string{f.acct.ID.String(): "blog-from-log"})
	sites := func(f *sitesFixture, blog, docs string) []billingapi.SiteTraffic {
		return []billingapi.SiteTraffic{{Key: f.acct.ID.String(), Name: blog, LastEpoch: f.blogLast, Month: f.blogFeb},
			{Key: f.docs.ID.String(), Name: docs, Linked: true, LastEpoch: f.docsLast, Month: f.docsFeb}}
	}
	tests := []struct {
		name    string
		f       *sitesFixture
		account string
		code    int
		want    []billingapi.SiteTraffic
	}{
		{"own and linked keys, names from the records", plain, f.acct.ID.String(), 200, sites(plain, "blog", "docs")},
		{"a name from the origin's log wins", named, f.acct.ID.String(), 200, sites(named, "blog-from-log", "docs")},
		{"a linked key asked alone is its own site", plain, f.docs.ID.String(), 200,
			[]billingapi.SiteTraffic{{Key: f.docs.ID.String(), Name: "docs", LastEpoch: f.docsLast, Month: f.docsFeb}}},
		{"an account billing never saw", plain, testkit.Key(t, 85).ID.String(), 200,
			[]billingapi.SiteTraffic{{Key: testkit.Key(t, 85).ID.String()}}},
		{"not a peer ID", plain, "nobody", 422, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got billingapi.AccountSites
			code, body := getJSON(t, tc.f.url+"/api/v1/accounts/"+tc.account+"/sites", &got)
			if code != tc.code {
				t.Fatalf("HTTP %d, want %d: %s", code, tc.code, body)
			}
			if code != 200 {
				return
			}
			if got.Account != tc.account || got.LastEpoch != f.feb1 || got.EpochSeconds != 60 ||
				!got.Month.Equal(time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)) {
				t.Fatalf("answer %+v", got)
			}
			if !slices.Equal(got.Sites, tc.want) {
				t.Fatalf("sites\n%+v\nwant\n%+v", got.Sites, tc.want)
			}
		})
	}
}

// TestServedHistory: what was served for a key per epoch over a window
// (default the last 30 days), summed in steps past MaxServedPoints
// epochs, and its top paths; bad windows and keys are refused.
func TestServedHistory(t *testing.T) { testServedHistory(t, func(*testing.T) string { return "" }) }

// TestServedHistoryPostgres runs the same rows on PostgreSQL.
func TestServedHistoryPostgres(t *testing.T) { testServedHistory(t, pgDSN) }

func testServedHistory(t *testing.T, dsn func(*testing.T) string) {
	f := newSitesFixture(t, dsn(t), nil)
	now := f.tl.clock()
	blog := f.acct.ID.String()
	q := func(from, to int64) string {
		return "?from=" + strconv.FormatInt(from, 10) + "&to=" + strconv.FormatInt(to, 10)
	}
	pt := func(epoch, bytes, reqs int64) billingapi.EpochTraffic {
		return billingapi.EpochTraffic{Epoch: epoch, Traffic: billingapi.Traffic{Bytes: bytes, Requests: reqs}}
	}
	path := func(p string, bytes, reqs int64) billingapi.PathTraffic {
		return billingapi.PathTraffic{Path: p, Traffic: billingapi.Traffic{Bytes: bytes, Requests: reqs}}
	}
	month := int64(30 * 24 * 3600)
	lo := f.tl.epochOf(now) - month
	step := 60 * ((month/60 + 1 + billingapi.MaxServedPoints - 1) / billingapi.MaxServedPoints) // 43201 epochs
	tests := []struct {
		name, key, query string
		code             int
		from, to, step   int64
		points           []billingapi.EpochTraffic
		byReqs, byBytes  []billingapi.PathTraffic
	}{
		{"default: the last 30 days", blog, "", 200, lo, f.tl.epochOf(now) + 60, step,
			// 43201 epochs in steps of 44: January's last and February's
			// first two fall in one step.
			[]billingapi.EpochTraffic{pt(lo+(f.jan-lo)/step*step, 1610, 6)},
			[]billingapi.PathTraffic{path("/", 700, 4), path("/big.bin", 900, 1)},
			[]billingapi.PathTraffic{path("/big.bin", 900, 1), path("/", 700, 4)}},
		{"per epoch, and a window is widened to whole epochs", blog, q(f.jan+10, f.feb1+1), 200, f.jan, f.feb1 + 60, 60,
			[]billingapi.EpochTraffic{pt(f.jan, 100, 1), pt(f.feb0, 1100, 2), pt(f.feb1, 410, 3)},
			[]billingapi.PathTraffic{path("/", 700, 4), path("/big.bin", 900, 1)},
			[]billingapi.PathTraffic{path("/big.bin", 900, 1), path("/", 700, 4)}},
		{"one epoch", blog, q(f.feb1, f.feb1+60), 200, f.feb1, f.feb1 + 60, 60,
			[]billingapi.EpochTraffic{pt(f.feb1, 410, 3)}, []billingapi.PathTraffic{path("/", 400, 2)}, []billingapi.PathTraffic{path("/", 400, 2)}},
		{"another key's records are not counted", f.docs.ID.String(), q(f.jan, f.feb1+60), 200, f.jan, f.feb1 + 60, 60,
			[]billingapi.EpochTraffic{pt(f.feb0, 30, 1), pt(f.feb1, 40, 1)},
			[]billingapi.PathTraffic{path("/docs/", 70, 2)}, []billingapi.PathTraffic{path("/docs/", 70, 2)}},
		{"nothing served", testkit.Key(t, 86).ID.String(), "", 200, lo, f.tl.epochOf(now) + 60, step,
			[]billingapi.EpochTraffic{}, []billingapi.PathTraffic{}, []billingapi.PathTraffic{}},
		{"a window over MaxServedWindow", blog, q(now.Unix()-32*24*3600, now.Unix()), 422, 0, 0, 0, nil, nil, nil},
		{"from after to", blog, q(f.feb1, f.feb0), 422, 0, 0, 0, nil, nil, nil},
		{"from not a number", blog, "?from=yesterday", 422, 0, 0, 0, nil, nil, nil},
		{"to out of range", blog, "?to=-5", 422, 0, 0, 0, nil, nil, nil},
		{"not a peer ID", "nobody", "", 422, 0, 0, 0, nil, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got billingapi.ServedHistory
			code, body := getJSON(t, f.url+"/api/v1/publishers/"+tc.key+"/served"+tc.query, &got)
			if code != tc.code {
				t.Fatalf("HTTP %d, want %d: %s", code, tc.code, body)
			}
			if code != 200 {
				if !strings.Contains(body, `"reason": "malformed"`) {
					t.Fatalf("refusal without its reason: %s", body)
				}
				return
			}
			if got.Publisher != tc.key || got.From != tc.from || got.To != tc.to || got.Step != tc.step {
				t.Fatalf("window %d..%d step %d, want %d..%d step %d", got.From, got.To, got.Step, tc.from, tc.to, tc.step)
			}
			var total billingapi.Traffic
			for _, p := range tc.points {
				total.Bytes += p.Bytes
				total.Requests += p.Requests
			}
			if !slices.Equal(got.Points, tc.points) || got.Total != total {
				t.Fatalf("points %+v total %+v, want %+v", got.Points, got.Total, tc.points)
			}
			if !slices.Equal(got.TopByRequests, tc.byReqs) || !slices.Equal(got.TopByBytes, tc.byBytes) {
				t.Fatalf("top paths by requests %+v, by bytes %+v; want %+v, %+v", got.TopByRequests, got.TopByBytes, tc.byReqs, tc.byBytes)
			}
		})
	}
}

// TestServedHistoryTopPaths: the top lists hold TopPaths paths.
func TestServedHistoryTopPaths(t *testing.T) {
	tl := newTestLedger(t, "", Config{})
	edge, pub := testkit.Key(t, 87), testkit.Key(t, 88)
	tl.admit(t, edge)
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 1 << 20})
	epoch := tl.epochOf(tl.clock()) - 60
	var recs []billingapi.Record
	for i := range 2 * billingapi.TopPaths {
		for j := 0; j <= i; j++ { // path i is asked i+1 times, for 1 byte each
			r := rec(uint64(len(recs)+1), "blog", "c", 1, epoch)
			r.Path = "/p" + strconv.Itoa(i)
			recs = append(recs, r)
		}
	}
	if _, err := tl.IngestBatch(context.Background(), signBatch(t, edge, epoch, 1, recs), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	h, err := tl.ServedHistory(context.Background(), pub.ID.String(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.TopByRequests) != billingapi.TopPaths || h.TopByRequests[0].Path != "/p19" || h.TopByRequests[9].Path != "/p10" ||
		h.Total.Requests != int64(len(recs)) {
		t.Fatalf("top paths %+v, total %+v", h.TopByRequests, h.Total)
	}
}
