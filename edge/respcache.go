package edge

import (
	"bytes"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// maxCachedResponse is the largest response body kept ready to send;
// larger ones stream from the block caches.
const maxCachedResponse = 4 << 20

// response is a complete answer kept ready to send: status 200, the
// headers to write, the body, and until when it may be reused.
type response struct {
	header     http.Header
	length     []string // the Content-Length header value, prebuilt
	body       []byte
	promoted   atomic.Int64 // when it last moved to the front of the LRU (unix ns)
	ageHeader  atomic.Pointer[ageValue]
	etag       string
	expires    time.Time // zero: immutable
	stored     time.Time // when the gateway wrote it
	modtime    time.Time
	refreshing bool // expired, and one request is fetching it anew
	// site and sitePath are the named site the answer belongs to and its
	// path there (requestSite; "" for immutable content), stamp the
	// generation its request started under: a change of the site after
	// it makes the answer stale.
	site, sitePath string
	stamp          atomic.Uint64
}

// ageValue is an Age header value, formatted once for a whole second.
type ageValue struct {
	second int64 // the Unix second it was formatted for
	value  []string
}

// age returns the Age header of a hit at now: whole seconds since the
// answer was stored, formatted at most once a second.
func (r *response) age(now time.Time) []string {
	sec := now.Unix()
	if a := r.ageHeader.Load(); a != nil && a.second == sec {
		return a.value
	}
	a := &ageValue{second: sec, value: []string{strconv.Itoa(int(now.Sub(r.stored) / time.Second))}}
	r.ageHeader.Store(a)
	return a.value
}

// staleGrace is how long an expired response may still be served while
// one request fetches its replacement, so an expiry under load does not
// send every concurrent request upstream at once.
const staleGrace = 10 * time.Second

// responseCache keeps whole responses of cacheable GETs so a hit writes
// stored bytes with stored headers: no path resolution, no UnixFS
// decoding, no block lookups. Bounded by bytes.
type responseCache struct {
	mu    sync.RWMutex
	lru   *simplelru.LRU[string, *response]
	bytes int64
	max   int64
	gens  *generations
}

func newResponseCache(maxBytes int64, gens *generations) *responseCache {
	c := &responseCache{max: maxBytes, gens: gens}
	c.lru, _ = simplelru.NewLRU[string, *response](1<<30, func(_ string, r *response) { c.bytes -= r.size() })
	return c
}

func (r *response) size() int64 { return int64(len(r.body)) + 512 }

// key names a request's answer: host (without port; X-Forwarded-Host if
// set, as the gateway answers for it), path and query, and the Accept
// header (it selects raw, CAR or deserialized responses).
func responseKey(r *http.Request) string {
	host := requestHost(r)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(host) + "\x00" + r.URL.RequestURI() + "\x00" + r.Header.Get("Accept")
}

func (c *responseCache) get(key string, now time.Time) (*response, bool) {
	// Hits share a read lock; a hit moves its entry to the front of the
	// LRU (which needs the write lock) at most once a second.
	c.mu.RLock()
	r, ok := c.lru.Peek(key)
	c.mu.RUnlock()
	if !ok {
		return nil, false
	}
	if r.site != "" && !c.gens.current(r.site, &r.stamp) {
		// Its site changed after it was made: never served again.
		c.mu.Lock()
		if cur, ok := c.lru.Peek(key); ok && cur == r {
			c.lru.Remove(key)
		}
		c.mu.Unlock()
		return nil, false
	}
	fresh := r.expires.IsZero() || !now.After(r.expires)
	if fresh && now.UnixNano()-r.promoted.Load() < int64(time.Second) {
		return r, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok = c.lru.Get(key); !ok {
		return nil, false
	}
	r.promoted.Store(now.UnixNano())
	if r.expires.IsZero() || !now.After(r.expires) {
		return r, true
	}
	if r.refreshing && now.Before(r.expires.Add(staleGrace)) {
		return r, true // stale while another request revalidates
	}
	if now.After(r.expires.Add(staleGrace)) {
		c.lru.Remove(key)
		return nil, false
	}
	r.refreshing = true // this caller fetches it anew
	return nil, false
}

func (c *responseCache) add(key string, r *response) {
	if r.size() > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.lru.Peek(key); ok {
		// Replacing (a refresh, or concurrent misses for one answer):
		// simplelru does not report the old value as evicted.
		c.bytes -= old.size()
	}
	c.lru.Add(key, r)
	c.bytes += r.size()
	for c.bytes > c.max && c.lru.Len() > 0 {
		c.lru.RemoveOldest()
	}
}

// purge drops the answers of the sites whose path is one of paths, or
// under one ending in "/"; no paths drops every answer of the sites. It
// returns how many it dropped.
func (c *responseCache) purge(sites []string, paths []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, key := range c.lru.Keys() {
		r, ok := c.lru.Peek(key)
		if !ok || r.site == "" || !slices.Contains(sites, r.site) {
			continue
		}
		if len(paths) > 0 && !slices.ContainsFunc(paths, func(p string) bool {
			return r.sitePath == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(r.sitePath, p))
		}) {
			continue
		}
		c.lru.Remove(key)
		n++
	}
	return n
}

func (c *responseCache) size() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}

// withResponseCache answers GET and HEAD from ready responses and keeps
// the cacheable answers of next: status 200, no Set-Cookie, a body of at
// most maxCachedResponse, and Cache-Control either immutable or with a
// max-age (kept that long). Range and conditional requests are answered
// from a cached body by http.ServeContent.
func (e *Edge) withResponseCache(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		key := responseKey(r)
		now := time.Now()
		if cached, ok := e.resp.get(key, now); ok {
			e.responseHits.Add(1)
			h := w.Header()
			for k, v := range cached.header {
				h[k] = v
			}
			if !cached.expires.IsZero() {
				// A named answer ages: its Cache-Control stays as the
				// gateway wrote it (max-age is the record's TTL, other
				// directives kept) and Age tells how much of it is used,
				// as a shared cache does (RFC 9111, section 5.1).
				h["Age"] = cached.age(now)
			}
			if r.Header.Get("Range") == "" && r.Header.Get("If-None-Match") == "" && r.Header.Get("If-Modified-Since") == "" {
				h["Content-Length"] = cached.length
				w.WriteHeader(http.StatusOK)
				if r.Method == http.MethodGet {
					w.Write(cached.body)
				}
				return
			}
			http.ServeContent(w, r, "", cached.modtime, bytes.NewReader(cached.body))
			return
		}
		if r.Header.Get("Range") != "" || r.Method == http.MethodHead {
			next.ServeHTTP(w, r) // partial or bodiless: nothing to keep
			return
		}
		limit := min(maxCachedResponse, e.resp.max/2)
		if limit < 1<<10 {
			next.ServeHTTP(w, r) // a cache too small to keep anything: do not copy
			return
		}
		// The stamp is taken before the answer is made: if the site
		// changes while it is, the answer is stored already stale.
		// The site is read before next, which rewrites the request's path
		// (the hostname gateway).
		stamp := e.resp.gens.stamp()
		site, sitePath := e.requestSite(r)
		rec := &recordingWriter{ResponseWriter: w, limit: int(limit)}
		next.ServeHTTP(rec, r)
		if r.Context().Err() != nil {
			return // the client went away: the answer may be unfinished
		}
		if resp := rec.response(now); resp != nil {
			resp.site, resp.sitePath = site, sitePath
			resp.stamp.Store(stamp)
			e.resp.add(key, resp)
		}
	})
}

// recordingWriter passes a response through and keeps a copy of it while
// it stays small enough to cache.
type recordingWriter struct {
	http.ResponseWriter
	limit   int
	code    int
	header  http.Header // as the handler wrote it
	buf     bytes.Buffer
	tooBig  bool
	written bool
	length  int  // the Content-Length the handler declared, -1 if none
	failed  bool // a write to the client failed: the body may be cut short
}

// start notes the status and the headers as the handler set them, and,
// from Content-Length, whether the body can be kept at all (and how much
// room it needs). The headers are copied before they go out: middleware
// outside the edge (Caddy's encode) rewrites the same header map as it
// writes (Content-Encoding, a suffixed ETag), and that belongs to one
// response, not to what is kept for the next.
func (w *recordingWriter) start(code int) {
	w.code, w.written = code, true
	if code == http.StatusOK {
		w.header = w.ResponseWriter.Header().Clone()
	}
	w.length = -1
	if n, err := strconv.Atoi(w.ResponseWriter.Header().Get("Content-Length")); err == nil {
		w.length = n
		if n > w.limit || code != http.StatusOK {
			w.tooBig = true
		} else {
			w.buf.Grow(n)
		}
	}
}

func (w *recordingWriter) WriteHeader(code int) {
	if !w.written {
		w.start(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.start(http.StatusOK)
	}
	if !w.tooBig {
		if w.buf.Len()+len(b) > w.limit {
			w.tooBig = true
			w.buf = bytes.Buffer{}
		} else {
			w.buf.Write(b)
		}
	}
	n, err := w.ResponseWriter.Write(b)
	if err != nil {
		w.failed = true
	}
	return n, err
}

// Flush lets streamed answers stream.
func (w *recordingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// response returns what to cache, or nil if the answer is not cacheable
// or not whole: a client that goes away mid-answer (or a handler that
// stops early) must not leave a short body to be replayed to everyone.
func (w *recordingWriter) response(now time.Time) *response {
	if w.code != http.StatusOK || w.tooBig || w.failed || (w.length >= 0 && w.buf.Len() != w.length) {
		return nil
	}
	h := w.header
	if h == nil || h.Get("Set-Cookie") != "" {
		return nil
	}
	cc := h.Get("Cache-Control")
	var expires time.Time
	switch {
	case strings.Contains(cc, "immutable"):
	case strings.Contains(cc, "max-age="):
		v := cc[strings.Index(cc, "max-age=")+len("max-age="):]
		if i := strings.IndexAny(v, ", "); i >= 0 {
			v = v[:i]
		}
		secs, err := strconv.Atoi(v)
		if err != nil || secs <= 0 {
			return nil
		}
		expires = now.Add(time.Duration(secs) * time.Second)
	default:
		return nil
	}
	header := h
	for k, v := range header {
		// One line per list-valued header (RFC 9110, section 5.3): a hit
		// writes fewer header lines (CORS alone is 13 lines as boxo sets
		// it, 4 joined).
		if len(v) > 1 && (strings.HasPrefix(k, "Access-Control-") || k == "Vary") {
			header[k] = []string{strings.Join(v, ", ")}
		}
	}
	header.Del("Content-Length")
	header.Del("Date")
	modtime, _ := http.ParseTime(h.Get("Last-Modified"))
	body := w.buf.Bytes()
	if cap(body)-len(body) > len(body)/8 {
		body = bytes.Clone(body) // do not keep much unused capacity
	}
	return &response{header: header, length: []string{strconv.Itoa(len(body))}, body: body,
		etag: h.Get("Etag"), expires: expires, stored: now, modtime: modtime}
}
