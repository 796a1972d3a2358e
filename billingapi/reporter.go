package billingapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/topcdn/topcdn/identity"
	"go.uber.org/zap"
)

// DefaultEpoch is the epoch length of the devnet; production uses an hour.
const DefaultEpoch = time.Minute

// maxPendingRecords bounds the records a Reporter holds for one epoch
// (MaxParts batches of MaxRecords); Observe drops (and counts) responses
// beyond it.
const maxPendingRecords = MaxParts * MaxRecords

// Served is one response an edge served, as the edge reports it to
// Observe.
type Served struct {
	// Name is the human site name, or "" for /ipfs/{cid} requests.
	Name string
	// CID is the CID of the object served.
	CID string
	// Root is the site's root CID, if known.
	Root string
	// Path is the request's URL path, without the query; Observe cuts
	// it to what a Record carries (CutPath).
	Path string
	// Bytes is the body bytes sent.
	Bytes int64
	// Status is the HTTP status code.
	Status int
	// Time is when the response was served.
	Time time.Time
	// Client is the client's address; only its salted, hashed /24 (IPv4)
	// or /48 (IPv6) prefix leaves the edge.
	Client netip.Addr
}

// billable reports whether s can be a batch record billing accepts: it
// names the object served, its fields fit the wire format's limits, and
// its status and byte count are sane (see Record.validate).
func (s Served) billable() bool {
	return s.CID != "" && len(s.CID) <= MaxField && len(s.Root) <= MaxField && len(s.Name) <= MaxField &&
		s.Status >= 100 && s.Status <= 599 && s.Bytes >= 0
}

// ReporterOption configures a Reporter.
type ReporterOption func(*reporterOptions)

type reporterOptions struct {
	epoch  time.Duration
	client *http.Client
	log    *zap.Logger
	url    string
	now    func() time.Time
	part   int // records per batch
	budget int // bytes of encoded records per batch (recordBudget; tests lower it)
}

// WithEpoch sets the epoch length, which must be billing's; whole seconds.
// If d < 1s, it is ignored. Default: DefaultEpoch.
func WithEpoch(d time.Duration) ReporterOption {
	return func(o *reporterOptions) {
		if d >= time.Second {
			o.epoch = d.Truncate(time.Second)
		}
	}
}

// WithHTTPClient sets the client batches are posted with. If c is nil, it
// is ignored. Default: a client with a 30 s timeout.
func WithHTTPClient(c *http.Client) ReporterOption {
	return func(o *reporterOptions) {
		if c != nil {
			o.client = c
		}
	}
}

// WithLogger sets the logger. If l is nil, it is ignored. Default: none.
func WithLogger(l *zap.Logger) ReporterOption {
	return func(o *reporterOptions) {
		if l != nil {
			o.log = l
		}
	}
}

// WithPublicURL sets the edge's public base URL, sent in each batch for the
// prober. Default: none.
func WithPublicURL(u string) ReporterOption {
	return func(o *reporterOptions) { o.url = strings.TrimRight(u, "/") }
}

// WithPartSize sets how many records one batch holds before an epoch goes
// out in parts. Default: MaxRecords. Values outside 1..MaxRecords are
// ignored.
func WithPartSize(n int) ReporterOption {
	return func(o *reporterOptions) {
		if n > 0 && n <= MaxRecords {
			o.part = n
		}
	}
}

// Reporter collects what an edge serves and reports it to billing: per
// epoch, one batch of records signed with the edge key, posted to
// POST {billing}/api/v1/batches and resent byte for byte until billing
// answers.
type Reporter struct {
	key  *identity.Key
	url  string
	opts reporterOptions

	mu      sync.Mutex
	epoch   int64 // start of the open epoch, Unix seconds
	pending []pendingRecord
	serial  uint64 // next serial
	seq     uint64 // next batch sequence
	dropped int64
	// unbillable counts responses of the open epoch left out of its batch.
	unbillable int64
	// bytes sums the records of the open epoch; prev and prevBytes are
	// the last closed epoch and the bytes of its batches (EpochTotals).
	bytes     uint64
	prev      int64
	prevBytes uint64
}

type pendingRecord struct {
	s      Served
	serial uint64
}

// NewReporter returns a Reporter signing with key and posting to the
// billing service at billingURL. Serials and batch sequence numbers start
// at the current time in nanoseconds, so they keep increasing across
// restarts.
func NewReporter(key *identity.Key, billingURL string, opts ...ReporterOption) *Reporter {
	o := reporterOptions{
		epoch:  DefaultEpoch,
		client: &http.Client{Timeout: 30 * time.Second},
		log:    zap.NewNop(),
		now:    time.Now,
		part:   MaxRecords,
		budget: recordBudget,
	}
	for _, opt := range opts {
		opt(&o)
	}
	start := uint64(o.now().UnixNano())
	return &Reporter{
		key:    key,
		url:    strings.TrimRight(billingURL, "/"),
		opts:   o,
		serial: start,
		seq:    start,
	}
}

// epochOf returns the start of the epoch holding t, in Unix seconds.
func epochOf(t time.Time, epoch time.Duration) int64 {
	secs := int64(epoch / time.Second)
	u := t.Unix()
	return u - u%secs
}

// Observe records one response. It takes a lock and appends; it never
// blocks on I/O. Responses of an epoch already closed are counted in the
// open one.
//
// A response that names no object (a 304 or an error the gateway answered
// before resolving a CID) or that billing would refuse as malformed is
// not billable: it is counted and left out, so that one such request
// cannot make billing refuse the whole batch.
func (r *Reporter) Observe(s Served) {
	s.Path = CutPath(s.Path)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !s.billable() {
		r.unbillable++
		return
	}
	if len(r.pending) >= maxPendingRecords {
		r.dropped++
		return
	}
	r.pending = append(r.pending, pendingRecord{s: s, serial: r.serial})
	r.serial++
	r.bytes += uint64(s.Bytes)
}

// EpochTotals is what a Reporter has recorded: the open epoch and the
// bytes of its records so far, and the last epoch it closed with the bytes
// of the batches it signed for it. An edge puts them in its heartbeats,
// so the router can vouch for what the edge's batches may hold.
type EpochTotals struct {
	// Epoch is the open epoch's start, Unix seconds (0 before Run).
	Epoch int64
	// Bytes is the body bytes of the open epoch's records so far.
	Bytes uint64
	// Prev is the last closed epoch's start, 0 if none closed yet.
	Prev int64
	// PrevBytes is the body bytes of Prev's batches, exactly.
	PrevBytes uint64
}

// Totals returns the Reporter's EpochTotals now.
func (r *Reporter) Totals() EpochTotals {
	r.mu.Lock()
	defer r.mu.Unlock()
	return EpochTotals{Epoch: r.epoch, Bytes: r.bytes, Prev: r.prev, PrevBytes: r.prevBytes}
}

// Run closes an epoch at each epoch boundary, signs its batch and posts
// it, retrying failed posts with the same bytes. When ctx ends it closes
// the open epoch and tries for up to 10 s to post what is left.
func (r *Reporter) Run(ctx context.Context) {
	r.mu.Lock()
	r.epoch = epochOf(r.opts.now(), r.opts.epoch)
	r.mu.Unlock()
	var queue [][]byte
	retry := time.Second
	for {
		next := time.Unix(r.currentEpoch(), 0).Add(r.opts.epoch)
		wait := next.Sub(r.opts.now())
		if len(queue) > 0 && retry < wait {
			wait = retry
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			queue = append(queue, r.closeEpoch(r.currentEpoch()+int64(r.opts.epoch/time.Second))...)
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for len(queue) > 0 && fctx.Err() == nil {
				if err := r.post(fctx, queue[0]); err != nil {
					r.opts.log.Warn("billing: post batch at shutdown", zap.Error(err))
					time.Sleep(200 * time.Millisecond)
					continue
				}
				queue = queue[1:]
			}
			cancel()
			if len(queue) > 0 {
				r.opts.log.Error("billing: batches not delivered at shutdown", zap.Int("batches", len(queue)))
			}
			return
		case <-timer.C:
		}
		if now := r.opts.now(); !now.Before(next) {
			queue = append(queue, r.closeEpoch(epochOf(now, r.opts.epoch))...)
		}
		for len(queue) > 0 {
			if err := r.post(ctx, queue[0]); err != nil {
				r.opts.log.Warn("billing: post batch; will resend", zap.Error(err), zap.Duration("retry", retry))
				retry = min(retry*2, time.Minute)
				break
			}
			queue = queue[1:]
			retry = time.Second
		}
	}
}

func (r *Reporter) currentEpoch() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch
}

// closeEpoch closes the open epoch, opens the one starting at next and
// returns the closed epoch's signed batches (see planParts), numbered by
// Part, none if it had no records.
func (r *Reporter) closeEpoch(next int64) [][]byte {
	r.mu.Lock()
	epoch, recs, dropped, unbillable := r.epoch, r.pending, r.dropped, r.unbillable
	r.pending, r.dropped, r.unbillable, r.epoch = nil, 0, 0, next
	r.prev, r.prevBytes, r.bytes = epoch, r.bytes, 0
	r.mu.Unlock()
	// Planned outside the lock: it reads every record's text fields.
	parts, over := planParts(recs, r.opts.part, r.opts.budget)
	r.mu.Lock()
	if len(over) > 0 && r.prev == epoch {
		for _, p := range over {
			r.prevBytes -= uint64(p.s.Bytes) // the heartbeats' figure is what the batches hold
		}
	}
	seq := r.seq
	r.seq += uint64(len(parts))
	r.mu.Unlock()
	if dropped > 0 {
		r.opts.log.Warn("billing: records dropped: epoch over its record limit", zap.Int64("dropped", dropped))
	}
	if len(over) > 0 {
		r.opts.log.Warn("billing: records dropped: epoch over its batch size limit", zap.Int("dropped", len(over)),
			zap.Int("parts", MaxParts), zap.Int("max_batch_size", MaxBatchSize))
	}
	if unbillable > 0 {
		r.opts.log.Debug("billing: responses naming no object left out", zap.Int64("epoch", epoch), zap.Int64("responses", unbillable))
	}
	salt := make([]byte, SaltSize)
	if _, err := rand.Read(salt); err != nil {
		r.opts.log.Error("billing: salt", zap.Error(err))
		return nil
	}
	var out [][]byte
	for part, chunk := range parts {
		b, err := r.sign(epoch, part, seq+uint64(part), salt, chunk)
		if err != nil {
			r.opts.log.Error("billing: sign batch", zap.Error(err))
			continue
		}
		out = append(out, b)
	}
	return out
}

// Bounds of a batch's encoding, for planParts. A record's JSON is at most
// recordOverhead bytes (keys, four numbers of at most 20 digits, the
// client hash in base64, a comma) plus its text fields as JSON strings
// (jsonStringBound). A batch envelope adds at most envelopeOverhead to
// the base64 of its body, and the body at most batchOverhead (keys, an
// edge ID of identity.MaxSignerSize bytes, a URL of MaxField bytes each
// escaped to 6, salt and Merkle root) to its records. recordBudget is
// then what the records of one batch may take for the envelope to stay
// within MaxBatchSize.
const (
	recordOverhead   = 192
	envelopeOverhead = 512
	batchOverhead    = 4096
	recordBudget     = (MaxBatchSize-envelopeOverhead)/4*3 - batchOverhead
)

// recordBound bounds the JSON encoding of the Record s becomes in a
// batch, with its comma.
func recordBound(s *Served) int {
	return recordOverhead + jsonStringBound(s.Name) + jsonStringBound(s.CID) + jsonStringBound(s.Root) + jsonStringBound(s.Path)
}

// jsonStringBound bounds the bytes of s's characters in a JSON string as
// encoding/json writes it: 6 for a byte it writes as \u00XX (controls,
// '<', '>', '&') and for an invalid UTF-8 byte (\ufffd), 2 for a quote or
// backslash, and for valid UTF-8 at most 2 a byte of a multi-byte
// character (U+2028 and U+2029, 3 bytes, become 6).
func jsonStringBound(s string) int {
	high := 2
	if !utf8.ValidString(s) {
		high = 6
	}
	n := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= utf8.RuneSelf:
			n += high
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			n += 6
		case c == '"' || c == '\\':
			n += 2
		default:
			n++
		}
	}
	return n
}

// planParts splits an epoch's records into its batches: each holds at
// most part records, whose encodings (recordBound) sum to at most budget
// bytes, so that no signed batch exceeds MaxBatchSize whatever its
// records' names and paths. Records beyond MaxParts batches are returned
// as over, to be dropped: with the default limits that takes millions of
// records with long paths in one epoch.
func planParts(recs []pendingRecord, part, budget int) (parts [][]pendingRecord, over []pendingRecord) {
	start, size := 0, 0
	for i := range recs {
		n := recordBound(&recs[i].s)
		if i > start && (i-start == part || size+n > budget) {
			parts = append(parts, recs[start:i])
			if len(parts) == MaxParts {
				return parts, recs[i:]
			}
			start, size = i, 0
		}
		size += n
	}
	if start < len(recs) {
		parts = append(parts, recs[start:])
	}
	return parts, nil
}

// sign builds and signs one batch of an epoch.
func (r *Reporter) sign(epoch int64, part int, seq uint64, salt []byte, recs []pendingRecord) ([]byte, error) {
	secs := int64(r.opts.epoch / time.Second)
	batch := Batch{Edge: r.key.ID.String(), URL: r.opts.url, Epoch: epoch, EpochSeconds: secs, Part: part, Seq: seq, Salt: salt,
		Records: make([]Record, 0, len(recs))}
	lo, hi := time.Unix(epoch, 0), time.Unix(epoch+secs, 0).Add(-time.Millisecond)
	for _, p := range recs {
		t := p.s.Time
		switch { // a response served around the boundary counts in the epoch closed
		case t.Before(lo):
			t = lo
		case t.After(hi):
			t = hi
		}
		batch.Records = append(batch.Records, Record{
			Serial: p.serial, Name: p.s.Name, CID: p.s.CID, Root: p.s.Root, Path: p.s.Path, Bytes: p.s.Bytes,
			Status: p.s.Status, Time: t.UnixMilli(), Client: ClientHash(salt, p.s.Client),
		})
	}
	sort.Slice(batch.Records, func(i, j int) bool { return batch.Records[i].Serial < batch.Records[j].Serial })
	batch.MerkleRoot = MerkleRoot(batch.Records)
	env, err := r.key.Sign(TypeBatch, &batch)
	if err != nil {
		return nil, fmt.Errorf("billing: sign batch: %w", err)
	}
	return json.Marshal(env)
}

// post sends one signed batch. Billing's 2xx and 4xx answers are final (a
// 4xx batch is recorded as rejected there); 5xx and network errors are
// retried.
func (r *Reporter) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url+"/api/v1/batches", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("billing: post batch: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.opts.client.Do(req)
	if err != nil {
		return fmt.Errorf("billing: post batch: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 500:
		return fmt.Errorf("billing: post batch: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	case resp.StatusCode >= 400:
		r.opts.log.Error("billing: batch rejected", zap.Int("status", resp.StatusCode), zap.ByteString("answer", bytes.TrimSpace(msg)))
	default:
		r.opts.log.Debug("billing: batch accepted", zap.ByteString("answer", bytes.TrimSpace(msg)))
	}
	return nil
}

// ClientPrefix returns the network prefix a client is reported by: its /24
// for IPv4 (and IPv4-mapped IPv6), its /48 for IPv6. Loopback is one
// prefix, whatever the address: 127.0.0.0/8 (but 127.0.0.0/24, where a
// devnet's clients share 127.0.0.1 with its services, see billing's shared
// prefixes), and ::1/128. So a request an edge makes to itself from any of
// its loopback addresses hashes to one client, which billing refuses as
// the edge's own traffic.
func ClientPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	switch {
	case a.Is4() && a.IsLoopback() && a.As4()[1] == 0 && a.As4()[2] == 0:
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, 0, 0}), 24)
	case a.Is4() && a.IsLoopback():
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, 0, 0}), 8)
	case a.IsLoopback():
		return netip.PrefixFrom(a, 128)
	}
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil { // invalid address
		return netip.Prefix{}
	}
	return p
}

// ClientHash returns the first ClientHashSize bytes of
// SHA-256(salt || ClientPrefix(a)), the client identity a Record carries.
func ClientHash(salt []byte, a netip.Addr) []byte { return PrefixHash(salt, ClientPrefix(a)) }

// PrefixHash returns the first ClientHashSize bytes of SHA-256(salt || p):
// the client identity of the clients in prefix p.
func PrefixHash(salt []byte, p netip.Prefix) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(p.String()))
	return h.Sum(nil)[:ClientHashSize]
}
