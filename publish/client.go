package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/originapi"
)

// Client talks to the origins' publisher API. With several origins, each
// operation runs whole on one origin, and again on the next when that one
// cannot answer (see originapi.Pool): an upload asks the next origin which
// blocks it lacks and signs a new authorization, a name's record is
// signed again after asking its current sequence.
type Client struct {
	pool *originapi.Pool // nil in a client bound to one origin, base
	base string
	http *http.Client
}

// NewClient returns a client for the origins at baseURL (e.g.
// http://127.0.0.1:8081; several separated by commas, tried in order). A
// nil httpClient means http.DefaultClient.
func NewClient(baseURL string, httpClient *http.Client, opts ...originapi.PoolOption) (*Client, error) {
	urls := originapi.SplitURLs(baseURL)
	if len(urls) == 0 {
		return nil, fmt.Errorf("publish: origin URL %q: want http(s)://host[:port]", baseURL)
	}
	pool, err := originapi.NewPool(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{pool: pool, base: pool.First(), http: httpClient}, nil
}

func (c *Client) url(p string) string { return c.base + p }

// each runs op with a client bound to one origin, failing over to the
// next as the pool says.
func (c *Client) each(ctx context.Context, op func(c *Client) error) error {
	if c.pool == nil {
		return op(c)
	}
	return c.pool.Do(ctx, func(_ context.Context, base string) error {
		return op(&Client{base: base, http: c.http})
	})
}

// do sends a request and decodes a JSON answer (at most 16 MiB) into out,
// turning an error answer into an *OriginError that carries the origin's
// message.
func (c *Client) do(req *http.Request, out any) error {
	err := httpkit.DoJSON(c.http, req, 16<<20, out)
	var re *httpkit.ResponseError
	switch {
	case errors.As(err, &re):
		return &OriginError{Status: re.Status, Message: re.Message()}
	case err != nil:
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// OriginError is an error answer from the origin.
type OriginError struct {
	Status  int
	Message string
}

func (e *OriginError) Error() string {
	return fmt.Sprintf("origin refused (HTTP %d): %s", e.Status, e.Message)
}

// Unavailable reports whether the answer says the origin could not answer
// (502, 503, 504), so another origin may.
func (e *OriginError) Unavailable() bool { return originapi.UnavailableStatus(e.Status) }

// Missing returns the blocks among cs the origin does not have, asking in
// batches of originapi.MaxMissingQuery.
func (c *Client) Missing(ctx context.Context, cs []cid.Cid) ([]cid.Cid, error) {
	var out []cid.Cid
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.missing(ctx, cs)
		return err
	})
	return out, err
}

func (c *Client) missing(ctx context.Context, cs []cid.Cid) ([]cid.Cid, error) {
	var missing []cid.Cid
	for start := 0; start < len(cs); start += originapi.MaxMissingQuery {
		batch := cs[start:min(start+originapi.MaxMissingQuery, len(cs))]
		req := originapi.MissingRequest{CIDs: make([]string, len(batch))}
		for i, b := range batch {
			req.CIDs[i] = b.String()
		}
		body, _ := json.Marshal(req)
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/api/v1/blocks/missing"), bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		hreq.Header.Set("Content-Type", "application/json")
		var resp originapi.MissingResponse
		if err := c.do(hreq, &resp); err != nil {
			return nil, err
		}
		for _, s := range resp.Missing {
			m, err := cid.Decode(s)
			if err != nil {
				return nil, fmt.Errorf("publish: origin answered a malformed CID %q: %w", s, err)
			}
			missing = append(missing, m)
		}
	}
	return missing, nil
}

// PushResult says what a Push sent.
type PushResult struct {
	// Blocks is the number of blocks in the DAG.
	Blocks int
	// Sent is the number of blocks uploaded (the ones the origin lacked).
	Sent int
	// SentBytes is the size of the blocks uploaded.
	SentBytes int64
	// Upload is the origin's answer.
	Upload *originapi.UploadResult
}

// Push uploads src to the origin as the publisher key: it first asks which
// blocks the origin lacks, then streams only those as a CAR whose roots
// are src's roots, with an upload authorization for exactly that CAR
// signed by key (originapi.SignUpload). The origin charges the bytes new to
// it to key's quota. Progress (may be nil) is told the bytes as they go
// out.
func (c *Client) Push(ctx context.Context, key *identity.Key, src Source, progress func(total int64) Progress) (*PushResult, error) {
	var out *PushResult
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.push(ctx, key, src, progress)
		return err
	})
	return out, err
}

func (c *Client) push(ctx context.Context, key *identity.Key, src Source, progress func(total int64) Progress) (*PushResult, error) {
	if key == nil {
		return nil, errors.New("publish: push needs the publisher's key to sign the upload")
	}
	all, err := src.Blocks()
	if err != nil {
		return nil, err
	}
	missing, err := c.missing(ctx, all)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, m := range missing {
		sz := src.Size(m)
		if sz < 0 {
			return nil, fmt.Errorf("publish: origin asked for %s, which is not in this DAG", m)
		}
		total += int64(sz)
	}
	auth, err := originapi.SignUpload(key, src.Roots(), missing)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	var p Progress = nopProgress{}
	if progress != nil {
		p = progress(total)
	}
	defer p.Finish()

	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeCAR(ctx, pw, src, missing, p))
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/api/v1/car"), pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/vnd.ipld.car; version=1")
	req.Header.Set(originapi.UploadHeader, auth)
	// The origin decides most refusals (401, 402, 403, 409) on the header
	// alone; with 100-continue the body waits for its go-ahead, so a
	// refused upload sends nothing. (Honoured by transports with an
	// ExpectContinueTimeout, as http.DefaultTransport has.)
	req.Header.Set("Expect", "100-continue")
	var up originapi.UploadResult
	if err := c.do(req, &up); err != nil {
		pr.CloseWithError(err)
		return nil, err
	}
	return &PushResult{Blocks: len(all), Sent: len(missing), SentBytes: total, Upload: &up}, nil
}

// writeCAR streams a CARv1 of the given blocks of src to w. Its errors
// reach Push through the request body, which names the package.
func writeCAR(ctx context.Context, w io.Writer, src Source, cs []cid.Cid, p Progress) error {
	cw, err := storage.NewWritable(w, src.Roots(), car.WriteAsCarV1(true))
	if err != nil {
		return fmt.Errorf("write CAR: %w", err)
	}
	for _, c := range cs {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := src.Get(c)
		if err != nil {
			return err
		}
		if err := cw.Put(ctx, c.KeyString(), data); err != nil {
			return fmt.Errorf("write CAR: %w", err)
		}
		p.Add(int64(len(data)))
	}
	return nil
}

// CurrentRecord fetches the origin's current IPNS record for name through
// its Trustless Gateway and checks it. It returns nil, nil if there is none.
func (c *Client) CurrentRecord(ctx context.Context, name ipns.Name) (*ipns.Record, error) {
	var out *ipns.Record
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.currentRecord(ctx, name)
		return err
	})
	return out, err
}

func (c *Client) currentRecord(ctx context.Context, name ipns.Name) (*ipns.Record, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/ipns/"+name.String()), nil)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Accept", "application/vnd.ipfs.ipns-record")
	raw, err := httpkit.Do(c.http, req, int64(ipns.MaxRecordSize))
	var re *httpkit.ResponseError
	switch {
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		return nil, nil
	case errors.As(err, &re):
		return nil, &OriginError{Status: re.Status, Message: re.Message()}
	case err != nil:
		return nil, fmt.Errorf("publish: fetch IPNS record: %w", err)
	}
	rec, err := ipns.UnmarshalRecord(raw)
	if err != nil {
		return nil, fmt.Errorf("publish: origin sent a malformed IPNS record: %w", err)
	}
	if err := ipns.ValidateWithName(rec, name); err != nil && !errors.Is(err, ipns.ErrExpiredRecord) {
		return nil, fmt.Errorf("publish: origin sent an invalid IPNS record: %w", err)
	}
	return rec, nil
}

// Defaults of NameOptions.
const (
	DefaultNameLifetime = 365 * 24 * time.Hour
	DefaultNameTTL      = time.Minute
)

// NameOptions are the validity and caching of a published name's record.
type NameOptions struct {
	// Lifetime is how long the record stays valid (its EOL). Default:
	// DefaultNameLifetime (one year), so a site stays up without
	// republishing.
	Lifetime time.Duration
	// TTL is how long readers may cache the record. Default:
	// DefaultNameTTL (one minute).
	TTL time.Duration
}

// PublishName signs an IPNS record pointing at root with the next sequence
// number after the origin's current one, carrying the human name in its
// signed metadata, and sends it to the origin.
func (c *Client) PublishName(ctx context.Context, human string, key *identity.Key, root cid.Cid, opts NameOptions) (*originapi.NameInfo, error) {
	var out *originapi.NameInfo
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.publishName(ctx, human, key, root, opts)
		return err
	})
	return out, err
}

func (c *Client) publishName(ctx context.Context, human string, key *identity.Key, root cid.Cid, opts NameOptions) (*originapi.NameInfo, error) {
	if opts.Lifetime <= 0 {
		opts.Lifetime = DefaultNameLifetime
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultNameTTL
	}
	name := ipns.NameFromPeer(key.ID)
	seq := uint64(1)
	cur, err := c.currentRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	if cur != nil {
		last, err := cur.Sequence()
		if err != nil {
			return nil, fmt.Errorf("publish: current record: %w", err)
		}
		seq = last + 1
	}
	rec, err := ipns.NewRecord(key.Private, path.FromCid(root), seq, time.Now().Add(opts.Lifetime), opts.TTL,
		ipns.WithMetadata(map[string]any{originapi.RecordNameKey: human}))
	if err != nil {
		return nil, fmt.Errorf("publish: sign IPNS record: %w", err)
	}
	raw, err := ipns.MarshalRecord(rec)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	body, _ := json.Marshal(originapi.NameClaim{IPNS: name.String(), Record: raw})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url("/api/v1/names/"+url.PathEscape(human)), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var ni originapi.NameInfo
	if err := c.do(req, &ni); err != nil {
		return nil, err
	}
	return &ni, nil
}

// ErrNoCheck is returned by Check when the origin has no pre-check
// endpoint (an origin older than it): nothing could be checked.
var ErrNoCheck = errors.New("publish: the origin cannot check a publish before it (no /check endpoint)")

// Check asks the origin, before anything is imported or sent, whether the
// publisher may upload there and then point the human name (if set) at
// the upload: whether the key is allowed, can pay, and owns the name or
// may claim it (one key publishes one name). A refusal is an
// *OriginError with the status and message the upload or the claim would
// get. It returns the publisher's usage and quota; an origin without the
// endpoint gives ErrNoCheck.
func (c *Client) Check(ctx context.Context, publisher peer.ID, human string) (*originapi.PublisherUsage, error) {
	var out *originapi.PublisherUsage
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.check(ctx, publisher, human)
		return err
	})
	return out, err
}

func (c *Client) check(ctx context.Context, publisher peer.ID, human string) (*originapi.PublisherUsage, error) {
	u := c.url("/api/v1/publishers/" + url.PathEscape(publisher.String()) + "/check")
	if human != "" {
		u += "?name=" + url.QueryEscape(human)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	var usage originapi.PublisherUsage
	err = c.do(req, &usage)
	var oe *OriginError
	switch {
	case errors.As(err, &oe) && (oe.Status == http.StatusNotFound || oe.Status == http.StatusMethodNotAllowed):
		// Check's endpoint refuses with other statuses only.
		return nil, ErrNoCheck
	case err != nil:
		return nil, err
	}
	return &usage, nil
}

// LookupName asks the origin what a human name points to.
func (c *Client) LookupName(ctx context.Context, human string) (*originapi.NameInfo, error) {
	var out *originapi.NameInfo
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.lookupName(ctx, human)
		return err
	})
	return out, err
}

func (c *Client) lookupName(ctx context.Context, human string) (*originapi.NameInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/api/v1/names/"+url.PathEscape(human)), nil)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	var ni originapi.NameInfo
	if err := c.do(req, &ni); err != nil {
		return nil, err
	}
	return &ni, nil
}

// NameHistory asks the origin which roots a human name pointed at, oldest
// first (GET /api/v1/names/{name}/history). A name never published is an
// *OriginError with status 404.
func (c *Client) NameHistory(ctx context.Context, human string) (*originapi.NameHistory, error) {
	var out *originapi.NameHistory
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.nameHistory(ctx, human)
		return err
	})
	return out, err
}

func (c *Client) nameHistory(ctx context.Context, human string) (*originapi.NameHistory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/api/v1/names/"+url.PathEscape(human)+"/history"), nil)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	var h originapi.NameHistory
	if err := c.do(req, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
