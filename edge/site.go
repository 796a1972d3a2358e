package edge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/ipfs/boxo/gateway"
)

// withSite404 answers a named site's missing paths with the site's own
// /404.html (status 404), as static hosts do; other answers pass through.
func (e *Edge) withSite404(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := requestHost(r)
		if e.isSite(host) {
			exists, err := e.siteExists(r.Context(), host)
			switch {
			case err != nil:
				writeError(w, err) // the origin cannot say: not the site's fault
				return
			case !exists:
				http.Error(w, "no site is published as "+host, http.StatusNotFound)
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		iw := &notFoundWriter{ResponseWriter: w}
		next.ServeHTTP(iw, r)
		if !iw.notFound {
			return
		}
		// Only DNSLink (named) sites have a 404 page of their own.
		if !e.isSite(host) {
			iw.flushOriginal()
			return
		}
		page := httptest.NewRecorder()
		req := r.Clone(r.Context())
		req.URL.Path = "/404.html"
		req.URL.RawPath = ""
		req.URL.RawQuery = ""
		req.Header.Del("Range")
		req.Header.Del("If-None-Match")
		req.Header.Del("If-Modified-Since")
		next.ServeHTTP(page, req)
		if page.Code != http.StatusOK {
			iw.flushOriginal()
			return
		}
		for k, v := range page.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Etag")
		w.Header().Set("Cache-Control", "public, max-age=60")
		w.WriteHeader(http.StatusNotFound)
		if r.Method == http.MethodGet {
			w.Write(page.Body.Bytes())
		}
	})
}

// notFoundWriter passes a response through unless it is a 404, which it
// holds back so a site's own 404 page can replace it.
type notFoundWriter struct {
	http.ResponseWriter
	notFound bool
	held     []byte
}

func (w *notFoundWriter) WriteHeader(code int) {
	if code == http.StatusNotFound {
		w.notFound = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *notFoundWriter) Write(b []byte) (int, error) {
	if w.notFound {
		w.held = append(w.held, b...)
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streamed answers (CARs) stream.
func (w *notFoundWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.notFound {
		f.Flush()
	}
}

func (w *notFoundWriter) flushOriginal() {
	w.ResponseWriter.WriteHeader(http.StatusNotFound)
	w.ResponseWriter.Write(w.held)
}

// isSite reports whether host (with or without a port) names a site:
// one label under the edge's domain, other than the gateway labels.
func (e *Edge) isSite(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	name, ok := strings.CutSuffix(strings.ToLower(host), "."+e.cfg.Domain)
	return ok && name != "" && !strings.Contains(name, ".") && name != "ipfs" && name != "ipns"
}

// siteExists reports whether the origin publishes the site at host,
// remembering the answer for siteCacheTTL. When the origin cannot say
// (down, an error, too slow), it returns the error (clientError's) and
// remembers nothing.
func (e *Edge) siteExists(ctx context.Context, host string) (bool, error) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	e.sitesMu.Lock()
	s, ok := e.sites[host]
	e.sitesMu.Unlock()
	if ok && time.Since(s.at) < siteCacheTTL {
		return s.exists, nil
	}
	_, _, err := e.src.lookupDNSLink(e.cfg.Domain)(ctx, "_dnslink."+host)
	var coded *gateway.ErrorStatusCode
	switch {
	case err != nil && ctx.Err() != nil:
		return true, nil // undecided, and the client has left: let the gateway answer
	case err != nil && (!errors.As(err, &coded) || coded.StatusCode != http.StatusNotFound):
		return false, err
	}
	exists := err == nil
	e.sitesMu.Lock()
	if len(e.sites) > 10000 {
		clear(e.sites) // bound memory against random host names
	}
	e.sites[host] = siteState{exists: exists, at: time.Now()}
	e.sitesMu.Unlock()
	return exists, nil
}

// siteCacheTTL is how long an edge trusts what it learnt of a site's
// existence.
const siteCacheTTL = 10 * time.Second

type siteState struct {
	exists bool
	at     time.Time
}
