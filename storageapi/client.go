package storageapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
)

// Order lifetimes the Client signs.
const (
	// WriteOrderLifetime is how long a Client's write and delete orders
	// stay valid.
	WriteOrderLifetime = 10 * time.Minute
	// ReadOrderLifetime is how long a Client's read orders and audits stay
	// valid.
	ReadOrderLifetime = 5 * time.Minute
)

// maxErrorBody bounds how much of an error answer a Client reads.
const maxErrorBody = 64 << 10

// Client reaches storage peers on behalf of one key: the origin's (to
// write, delete and audit shards) or a reader's (to read ranges). It signs
// an order for every request.
type Client struct {
	key  *identity.Key
	http *http.Client

	// Testing.
	now func() time.Time
}

// NewClient returns a client that signs its orders with key. A nil
// httpClient means one with connect, TLS and response-header timeouts and
// no overall one; bound each call with its context.
func NewClient(key *identity.Key, httpClient *http.Client, opts ...ClientOption) *Client {
	if httpClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = 10 * time.Second
		t.ResponseHeaderTimeout = time.Minute // covers the peer's fsync of a shard
		t.ExpectContinueTimeout = time.Second
		t.MaxIdleConnsPerHost = 16
		httpClient = &http.Client{Transport: t}
	}
	c := &Client{key: key, http: httpClient, now: time.Now}
	for _, o := range opts {
		o(c)
	}
	return c
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithClock dates the Client's orders by now instead of time.Now (tests,
// or a peer's clock known to be off). A nil now is ignored.
func WithClock(now func() time.Time) ClientOption {
	return func(c *Client) {
		if now != nil {
			c.now = now
		}
	}
}

// Put stores data as shard shardID on peer p at addr (its base URL). It
// signs a WriteOrder valid for WriteOrderLifetime, so it works only with
// the origin's key. Storing a shard the peer already holds succeeds. A
// peer without room for it answers with a *PeerError that matches
// ErrInsufficientStorage.
func (c *Client) Put(ctx context.Context, p peer.ID, addr, shardID string, data []byte) error {
	// No hash check here: callers name shards by hashing them, and the
	// peer checks the bytes against the ID on arrival anyway.
	h, err := c.order(TypeWriteOrder, WriteOrder{Peer: p.String(), Shard: shardID, Size: int64(len(data)),
		Expires: c.now().Add(WriteOrderLifetime)})
	if err != nil {
		return fmt.Errorf("storage: put %s: %w", shardID, err)
	}
	req, err := c.request(ctx, http.MethodPut, addr, shardID, "", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("storage: put %s: %w", shardID, err)
	}
	req.Header.Set(OrderHeader, h)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Expect", "100-continue") // the order is checked before the shard is sent
	_, err = c.do(req, maxErrorBody)
	if err != nil {
		return fmt.Errorf("storage: put %s to %s: %w", shardID, p, err)
	}
	return nil
}

// GetRange reads bytes [off, off+length) of shard shardID from peer p at
// addr. It signs a ReadOrder with a random serial, valid for
// ReadOrderLifetime, which the peer keeps as proof it served the bytes.
// It returns exactly length bytes or an error. The bytes are the peer's
// word: check them against their hash.
func (c *Client) GetRange(ctx context.Context, p peer.ID, addr, shardID string, off, length int64) ([]byte, error) {
	if off < 0 || length <= 0 || length > MaxReadLength || off > math.MaxInt64-length {
		return nil, fmt.Errorf("storage: get %s: range offset %d length %d: want offset >= 0 and length in [1, %d]",
			shardID, off, length, MaxReadLength)
	}
	serial := make([]byte, 16)
	if _, err := rand.Read(serial); err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", shardID, err)
	}
	h, err := c.order(TypeReadOrder, ReadOrder{Peer: p.String(), Shard: shardID, Offset: off, Length: length,
		Expires: c.now().Add(ReadOrderLifetime), Serial: hex.EncodeToString(serial)})
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", shardID, err)
	}
	req, err := c.request(ctx, http.MethodGet, addr, shardID, "", nil)
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", shardID, err)
	}
	req.Header.Set(OrderHeader, h)
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+length-1, 10))
	resp, err := c.send(req)
	if err != nil {
		return nil, fmt.Errorf("storage: get %s from %s: %w", shardID, p, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("storage: get %s from %s: %w: unexpected HTTP %d", shardID, p, ErrBadAnswer, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, length+1))
	if err != nil {
		return nil, fmt.Errorf("storage: get %s from %s: %w", shardID, p, err)
	}
	if int64(len(data)) != length {
		return nil, fmt.Errorf("storage: get %s from %s: %w: got %d bytes, asked for %d", shardID, p, ErrBadAnswer, len(data), length)
	}
	return data, nil
}

// Delete drops shard shardID from peer p at addr. It signs a DeleteOrder,
// so it works only with the origin's key. A peer that does not hold the
// shard answers with a *PeerError that matches ErrNotFound.
func (c *Client) Delete(ctx context.Context, p peer.ID, addr, shardID string) error {
	h, err := c.order(TypeDeleteOrder, DeleteOrder{Peer: p.String(), Shard: shardID,
		Expires: c.now().Add(WriteOrderLifetime)})
	if err != nil {
		return fmt.Errorf("storage: delete %s: %w", shardID, err)
	}
	req, err := c.request(ctx, http.MethodDelete, addr, shardID, "", nil)
	if err != nil {
		return fmt.Errorf("storage: delete %s: %w", shardID, err)
	}
	req.Header.Set(OrderHeader, h)
	if _, err := c.do(req, maxErrorBody); err != nil {
		return fmt.Errorf("storage: delete %s from %s: %w", shardID, p, err)
	}
	return nil
}

// Audit challenges peer p at addr to prove it holds bytes [off,
// off+length) of shard shardID, with a random 32-byte nonce. It checks
// that the answer has length bytes and a proof binding them to the nonce,
// and returns the bytes; the caller checks them against what the shard
// holds there. It signs an Audit, so it works only with the origin's key.
func (c *Client) Audit(ctx context.Context, p peer.ID, addr, shardID string, off, length int64) ([]byte, error) {
	if off < 0 || length <= 0 || length > MaxAuditLength || off > math.MaxInt64-length {
		return nil, fmt.Errorf("storage: audit %s: range offset %d length %d: want offset >= 0 and length in [1, %d]",
			shardID, off, length, MaxAuditLength)
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("storage: audit %s: %w", shardID, err)
	}
	env, err := c.key.Sign(TypeAudit, Audit{Peer: p.String(), Shard: shardID, Offset: off, Length: length,
		Nonce: nonce, Expires: c.now().Add(ReadOrderLifetime)})
	if err != nil {
		return nil, fmt.Errorf("storage: audit %s: %w", shardID, err)
	}
	body, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("storage: audit %s: %w", shardID, err)
	}
	req, err := c.request(ctx, http.MethodPost, addr, shardID, "/audit", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("storage: audit %s: %w", shardID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	raw, err := c.do(req, 2*MaxAuditLength) // base64 in JSON
	if err != nil {
		return nil, fmt.Errorf("storage: audit %s on %s: %w", shardID, p, err)
	}
	var ans AuditAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, fmt.Errorf("storage: audit %s on %s: %w: %v", shardID, p, ErrBadAnswer, err)
	}
	if int64(len(ans.Data)) != length {
		return nil, fmt.Errorf("storage: audit %s on %s: %w: answer has %d bytes, asked for %d", shardID, p, ErrBadAnswer, len(ans.Data), length)
	}
	if !bytes.Equal(ans.Proof, AuditProof(nonce, ans.Data)) {
		return nil, fmt.Errorf("storage: audit %s on %s: %w: proof does not match the nonce and data", shardID, p, ErrBadAnswer)
	}
	return ans.Data, nil
}

// Status asks the peer at addr for its capacity and use. It needs no
// order.
func (c *Client) Status(ctx context.Context, addr string) (*Status, error) {
	var st Status
	if err := c.getJSON(ctx, "status", addr, "/status", maxErrorBody, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// maxListBody bounds a peer's answer to List: about 700,000 shards.
const maxListBody = 64 << 20

// List asks the peer at addr which shards it holds. It needs no order; the
// answer is the peer's word, for deciding what to delete, not proof.
func (c *Client) List(ctx context.Context, addr string) ([]ShardInfo, error) {
	var out []ShardInfo
	if err := c.getJSON(ctx, "list", addr, "/shards", maxListBody, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// getJSON decodes the peer's answer (at most limit bytes) to GET
// addr+path, an unsigned request, into v; what names it in errors.
func (c *Client) getJSON(ctx context.Context, what, addr, path string, limit int64, v any) error {
	base, err := ParseBaseURL(addr)
	if err != nil {
		return fmt.Errorf("storage: %s: peer address %w", what, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return fmt.Errorf("storage: %s: %w", what, err)
	}
	raw, err := c.do(req, limit)
	if err != nil {
		return fmt.Errorf("storage: %s of %s: %w", what, addr, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("storage: %s of %s: %w: %v", what, addr, ErrBadAnswer, err)
	}
	return nil
}

// order signs an order and encodes it for OrderHeader.
func (c *Client) order(typ string, body any) (string, error) {
	env, err := c.key.Sign(typ, body)
	if err != nil {
		return "", err
	}
	return env.Encode()
}

// request builds a request for addr/shards/{shardID}{suffix}.
func (c *Client) request(ctx context.Context, method, addr, shardID, suffix string, body io.Reader) (*http.Request, error) {
	base, err := ParseBaseURL(addr)
	if err != nil {
		return nil, fmt.Errorf("peer address %w", err)
	}
	return http.NewRequestWithContext(ctx, method, base+"/shards/"+url.PathEscape(shardID)+suffix, body)
}

// send sends req and turns an error answer into a *PeerError.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e ErrorResponse
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return nil, &PeerError{Status: resp.StatusCode, Message: e.Error}
	}
	return nil, &PeerError{Status: resp.StatusCode, Message: snippet(body)}
}

// do sends req and returns the body of a success answer, up to limit
// bytes.
func (c *Client) do(req *http.Request, limit int64) ([]byte, error) {
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("answer over %d bytes", limit)
	}
	return body, nil
}
