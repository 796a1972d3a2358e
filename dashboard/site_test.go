package dashboard

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// fakeBilling answers GET /api/v1/publishers/{key}/served with history
// for its key and records the queries it was asked.
type fakeBilling struct {
	key     string
	history billingapi.ServedHistory
	mu      sync.Mutex
	queries []string
}

func (f *fakeBilling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.queries = append(f.queries, r.URL.RawQuery)
	f.mu.Unlock()
	if r.URL.Path != "/api/v1/publishers/"+f.key+"/served" {
		http.NotFound(w, r)
		return
	}
	json.NewEncoder(w).Encode(f.history)
}

// TestSitePage: GET /api/sites/{name} gives the site's root from the
// origin and its bytes and requests per epoch and top paths from billing
// (for the key the name is bound to, over billing's default window);
// without billing, or with billing down, the rest; a name not published
// is 404, one that is no name 400, an origin down 502.
func TestSitePage(t *testing.T) {
	key, _ := identity.Generate(nil)
	originURL, root := testOrigin(t, key)
	hist := billingapi.ServedHistory{Publisher: key.ID.String(), From: 1_800_000_000, To: 1_800_000_600, Step: 60,
		Points: []billingapi.EpochTraffic{{Epoch: 1_800_000_060, Traffic: billingapi.Traffic{Bytes: 500, Requests: 3}}},
		Total:  billingapi.Traffic{Bytes: 500, Requests: 3},
		TopByRequests: []billingapi.PathTraffic{{Path: "/", Traffic: billingapi.Traffic{Bytes: 300, Requests: 2}},
			{Path: "/about.html", Traffic: billingapi.Traffic{Bytes: 200, Requests: 1}}},
		TopByBytes: []billingapi.PathTraffic{{Path: "/", Traffic: billingapi.Traffic{Bytes: 300, Requests: 2}}}}
	fb := &fakeBilling{key: key.ID.String(), history: hist}
	bts := httptest.NewServer(fb)
	defer bts.Close()
	tests := []struct {
		name, origin, billing, site string
		code                        int
		served                      bool
		billingErr                  bool
	}{
		{"with billing", originURL, bts.URL, "blog", 200, true, false},
		{"billing down", originURL, "http://127.0.0.1:1", "blog", 200, false, true},
		{"no billing", originURL, "", "blog", 200, false, false},
		{"a name not published", originURL, bts.URL, "nosuch", 404, false, false},
		{"not a name", originURL, bts.URL, "Not_A_Name", 400, false, false},
		{"origin down", "http://127.0.0.1:1", bts.URL, "blog", 502, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(Config{Origin: tc.origin, Billing: tc.billing, Interval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			d.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/sites/"+tc.site, nil))
			if rec.Code != tc.code || rec.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("HTTP %d (Cache-Control %q), want %d: %s", rec.Code, rec.Header().Get("Cache-Control"), tc.code, rec.Body)
			}
			if tc.code != 200 {
				var e struct{ Error string }
				if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
					t.Fatalf("error answer without a message: %s", rec.Body)
				}
				return
			}
			var p SitePage
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Name != "blog" || p.CID != root.String() || p.Sequence == 0 || p.Publisher != key.ID.String() || p.Size != -1 {
				t.Fatalf("page %+v", p)
			}
			if (p.Served != nil) != tc.served || (p.Errors["billing"] != "") != tc.billingErr {
				t.Fatalf("served %+v, errors %v", p.Served, p.Errors)
			}
			if tc.served {
				b, _ := json.Marshal(p.Served)
				w, _ := json.Marshal(hist)
				if string(b) != string(w) {
					t.Fatalf("served %s, want billing's %s", b, w)
				}
				fb.mu.Lock()
				q := fb.queries[len(fb.queries)-1]
				fb.mu.Unlock()
				if q != "" {
					t.Fatalf("asked billing for window %q, want its default (30 days)", q)
				}
			}
		})
	}
	// The page itself: the sites list links each site to it.
	d, _ := New(Config{Origin: originURL, Interval: time.Hour})
	srv := httptest.NewServer(http.StripPrefix("/dashboard", d.Handler()))
	defer srv.Close()
	_, js := testkit.Get(t, srv.URL+"/dashboard/app.js", "")
	_, html := testkit.Get(t, srv.URL+"/dashboard/", "")
	for _, want := range []string{`"#/sites/" + encodeURIComponent(s.name)`, `fetch("api/sites/"`, "top_by_requests", "plot(\"site-bytes\""} {
		if !contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
	for _, want := range []string{`id="site-page"`, `id="site-top-requests"`, `id="site-top-bytes"`, `href="#/"`} {
		if !contains(html, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
