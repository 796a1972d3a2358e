package edge

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Served describes one response the edge sent: what billing needs to pay
// the edge for it, and no more.
type Served struct {
	// Name is the human site name the request addressed (NAME.domain,
	// /ipns/NAME), or "" for content addressed by CID.
	Name string
	// Root is the CID the request's path starts from, when the response
	// names it (X-Ipfs-Roots), or the CID in the request.
	Root string
	// CID is the CID of the object served (the last of X-Ipfs-Roots), or ""
	// when the response does not name one (errors, redirects).
	CID string
	// Path is the request's URL path without the query, cut to at most
	// MaxPathBytes at a character boundary: what billing shows as a
	// site's top paths.
	Path string
	// Status is the HTTP status sent.
	Status int
	// Bytes is how many body bytes were written.
	Bytes int64
	// Time is when the response ended.
	Time time.Time
	// Client is the address the request came from.
	Client netip.Addr
}

// MaxPathBytes bounds Served.Path: billing's records carry at most this
// much of a path (billingapi.MaxField).
const MaxPathBytes = 256

// Recorder receives one Served per response the edge sends. Record runs
// on the request's goroutine once the response is written, so it must
// not block.
type Recorder interface {
	Record(Served)
}

// Stats are an edge's running totals, for load reports.
type Stats struct {
	// Requests is how many requests it answered.
	Requests uint64
	// Bytes is how many body bytes it sent.
	Bytes uint64
	// ResponseHits is how many requests were answered from ready-made
	// responses, with no block read at all.
	ResponseHits uint64
	// BlockHits and BlockMisses count block reads served from the memory
	// or disk cache, and those fetched upstream.
	BlockHits, BlockMisses uint64
}

// Stats returns the edge's running totals.
func (e *Edge) Stats() Stats {
	return Stats{Requests: e.requests.Load(), Bytes: e.bytesSent.Load(), ResponseHits: e.responseHits.Load(),
		BlockHits: e.blockHits.Load(), BlockMisses: e.blockMisses.Load()}
}

// HealthPath answers probes (the DNS router's): 200 with the edge's peer
// ID while the edge serves.
const HealthPath = "/.well-known/topcdn/health"

func (e *Edge) serveHealth(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	doc := struct {
		Peer string `json:"peer"`
		// NameStream is true while the edge follows the origin's name
		// changes; NamesCursor is the ID of the last change it applied.
		NameStream  bool   `json:"name_stream"`
		NamesCursor *int64 `json:"names_cursor,omitempty"`
	}{Peer: e.cfg.Key.ID.String()}
	up, cursor, started := e.NameStream()
	doc.NameStream = up
	if started {
		doc.NamesCursor = &cursor
	}
	json.NewEncoder(w).Encode(doc)
}

// counters are shared by every response of an Edge.
type counters struct {
	requests     atomic.Uint64
	bytesSent    atomic.Uint64
	responseHits atomic.Uint64
	blockHits    atomic.Uint64
	blockMisses  atomic.Uint64
}

// withAccounting counts every response and, when a Recorder is set,
// reports it.
func (e *Edge) withAccounting(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := countingPool.Get().(*countingWriter)
		cw.ResponseWriter, cw.status, cw.n = w, 0, 0
		// The gateway rewrites a site's or subdomain's path in place
		// (/ipns/NAME/…): the path the client asked for is read first.
		path := r.URL.Path
		next.ServeHTTP(cw, r)
		status, n := cw.status, cw.n
		if status == 0 {
			status = http.StatusOK
		}
		cw.ResponseWriter = nil
		countingPool.Put(cw)
		e.requests.Add(1)
		e.bytesSent.Add(uint64(n))
		if e.cfg.Recorder != nil {
			e.cfg.Recorder.Record(e.served(r, path, w.Header(), status, n))
		}
	})
}

// served builds the record of one response from its request (path is
// the URL path the client asked for) and headers.
func (e *Edge) served(r *http.Request, path string, h http.Header, status int, n int64) Served {
	s := Served{Status: status, Bytes: n, Time: time.Now(), Path: cutPath(path)}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		s.Client = ap.Addr().Unmap()
	}
	host := requestHost(r)
	if e.isSite(host) {
		s.Name, _, _ = strings.Cut(strings.ToLower(hostOnly(host)), ".")
	} else if label, ok := strings.CutSuffix(strings.ToLower(hostOnly(host)), "."+e.cfg.Domain); ok {
		// {cid}.ipfs.domain or {name}.ipns.domain
		if first, kind, ok := strings.Cut(label, "."); ok && kind == "ipfs" {
			s.Root = first
		} else if ok && kind == "ipns" {
			s.Name = first
		}
	} else if rest, ok := strings.CutPrefix(r.URL.Path, "/ipfs/"); ok {
		s.Root, _, _ = strings.Cut(rest, "/")
	} else if rest, ok := strings.CutPrefix(r.URL.Path, "/ipns/"); ok {
		s.Name, _, _ = strings.Cut(rest, "/")
	}
	if roots := h.Get("X-Ipfs-Roots"); roots != "" {
		first, _, _ := strings.Cut(roots, ",")
		s.Root = strings.TrimSpace(first)
		s.CID = strings.TrimSpace(roots[strings.LastIndexByte(roots, ',')+1:])
	}
	return s
}

// cutPath returns at most MaxPathBytes of p, cut before a character
// that would cross the limit. It does not copy.
func cutPath(p string) string {
	if len(p) <= MaxPathBytes {
		return p
	}
	n := MaxPathBytes
	for n > 0 && !utf8.RuneStart(p[n]) {
		n--
	}
	return p[:n]
}

func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// countingWriter counts what passes through to the client.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

var countingPool = sync.Pool{New: func() any { return new(countingWriter) }}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Flush lets streamed answers (CARs) stream.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
