package edge

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkResponseCacheHit: a 1 KiB named answer served from the
// response cache, by parallel requests; "after_change" with another site
// changed since the answer was stored (its stamp behind the generation).
func BenchmarkResponseCacheHit(b *testing.B) {
	for _, tc := range []struct {
		name   string
		change bool
	}{{"steady", false}, {"after_change", true}} {
		b.Run(tc.name, func(b *testing.B) {
			e := &Edge{cfg: Config{Domain: "cdn.test"}, resp: newBenchResponseCache()}
			body := make([]byte, 1024)
			h := e.withResponseCache(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "public, max-age=600")
				w.Write(body)
			}))
			req := httptest.NewRequest("GET", "http://blog.cdn.test/", nil)
			h.ServeHTTP(httptest.NewRecorder(), req)
			if tc.change {
				benchChangeOtherSite(e)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					h.ServeHTTP(w, req)
				}
			})
		})
	}
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

func newBenchResponseCache() *responseCache { return newResponseCache(64<<20, newGenerations()) }

func benchChangeOtherSite(e *Edge) { e.resp.gens.bump("docs.cdn.test") }
