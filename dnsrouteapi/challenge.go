package dnsrouteapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
)

// TypeChallenge is the identity.Envelope type of an ACME DNS-01 challenge
// record an edge asks the router to set or remove.
const TypeChallenge = "topcdn/acme-challenge/v1"

// ChallengePath is where a router takes challenge records: POST (op "add"
// or "delete") or DELETE (op "delete"), body a JSON identity.Envelope of
// TypeChallenge signed by the edge. 204 on success.
const ChallengePath = "/api/v1/acme/challenges"

// Operations of a Challenge.
const (
	// OpAdd sets a TXT value at Name, until it expires or is deleted.
	OpAdd = "add"
	// OpDelete removes the signer's TXT value at Name (every value of the
	// signer there when Value is empty).
	OpDelete = "delete"
)

// ChallengePrefix is the first label of every name a challenge may name
// (RFC 8555 §8.4).
const ChallengePrefix = "_acme-challenge."

// Limits of one challenge.
const (
	// MaxChallengeBody bounds the JSON envelope of one challenge.
	MaxChallengeBody = 4 << 10
	// ChallengeValueLen is the length of a challenge value: an ACME key
	// authorization's SHA-256 digest, base64url without padding.
	ChallengeValueLen = 43
	// ChallengeTTL is the TTL of the router's challenge TXT answers:
	// short, so that a resolver asked before a record was set sees it
	// soon after.
	ChallengeTTL = 10 * time.Second
	maxNameLen   = 253 // without the trailing dot (RFC 1035 §2.3.4)
	maxLabelLen  = 63
)

// Challenge is an ACME DNS-01 TXT record an edge asks the router to set
// or remove, signed with its key as an identity.Envelope of
// TypeChallenge. No nonce guards against replays: an add is idempotent and
// republishes a value that validates nothing but the challenge it was
// made for, and a replayed delete removes only what its signer added.
type Challenge struct {
	// Peer is the edge's peer ID; it must equal the envelope's signer.
	Peer string `json:"peer"`
	// Op is OpAdd or OpDelete.
	Op string `json:"op"`
	// Name is the record's owner name, fully qualified as certmagic builds
	// it: "_acme-challenge.cdn.test.". Case does not matter; the trailing
	// dot may be left out.
	Name string `json:"name"`
	// Value is the TXT value, ChallengeValueLen base64url characters.
	// It may be empty in a delete, which then removes every value the
	// signer has at Name.
	Value string `json:"value"`
	// Time is when the challenge was made; it must be within the
	// router's skew (its heartbeat skew) of its clock.
	Time time.Time `json:"time"`
}

// Errors of a refused challenge; the router wraps one of them and its HTTP
// API maps them to status codes, and SendChallenge wraps the one the
// status names.
var (
	// ErrForgedChallenge marks a challenge whose signature does not
	// verify or whose peer is not its signer (403).
	ErrForgedChallenge = errors.New("forged challenge")
	// ErrChallengeRefused marks a challenge the router does not take from
	// this edge (not allowed, not admitted, quarantined) or for this name
	// (not one the router sets records at) (403).
	ErrChallengeRefused = errors.New("challenge refused")
	// ErrChallengeNotReady marks a challenge from an edge the router
	// does not hand out yet (no heartbeat or probe yet, billing's admitted
	// list not read yet): try again after Retry-After (503).
	ErrChallengeNotReady = errors.New("challenge not ready")
	// ErrInvalidChallenge marks a malformed challenge, or one whose time
	// is too far from the router's clock (400).
	ErrInvalidChallenge = errors.New("invalid challenge")
	// ErrChallengeLimited marks a challenge over one of the router's
	// limits of records per edge, per name or in total, or of adds per
	// edge (429).
	ErrChallengeLimited = errors.New("challenge limited")
)

// CheckedChallenge is a challenge that passed OpenChallenge, parsed.
type CheckedChallenge struct {
	Challenge
	// PeerID is the edge, the envelope's signer.
	PeerID peer.ID
	// FQDN is Name in lower case with its trailing dot.
	FQDN string
}

// OpenChallenge verifies env and validates the challenge it carries: the
// signature, the peer being the signer, and every field's form. The
// router's questions (the time skew, who may set which name) are the
// router's.
func OpenChallenge(env *identity.Envelope) (*CheckedChallenge, error) {
	var ch Challenge
	signer, err := env.Open(TypeChallenge, &ch)
	if err != nil {
		if errors.Is(err, identity.ErrBadSignature) {
			return nil, fmt.Errorf("%w: %w", ErrForgedChallenge, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidChallenge, err)
	}
	p, err := peer.Decode(ch.Peer)
	if err != nil {
		return nil, fmt.Errorf("%w: peer %q: %w", ErrInvalidChallenge, ch.Peer, err)
	}
	if p != signer {
		return nil, fmt.Errorf("%w: challenge for %s signed by %s", ErrForgedChallenge, p, signer)
	}
	c := &CheckedChallenge{Challenge: ch, PeerID: p}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidChallenge, p, err)
	}
	return c, nil
}

// validate checks the fields of a challenge and fills FQDN.
func (c *CheckedChallenge) validate() error {
	if c.Op != OpAdd && c.Op != OpDelete {
		return fmt.Errorf("op %q: want %q or %q", c.Op, OpAdd, OpDelete)
	}
	fqdn, err := challengeFQDN(c.Name)
	if err != nil {
		return err
	}
	c.FQDN = fqdn
	if c.Value != "" || c.Op == OpAdd {
		if err := CheckChallengeValue(c.Value); err != nil {
			return err
		}
	}
	if c.Time.IsZero() {
		return errors.New("no time")
	}
	return nil
}

// challengeFQDN checks that name is a domain name whose first label is
// _acme-challenge and returns it in lower case with its trailing dot.
func challengeFQDN(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if len(n) > maxNameLen {
		return "", fmt.Errorf("name of %d bytes: want at most %d", len(n), maxNameLen)
	}
	if !strings.HasPrefix(n+".", ChallengePrefix) || n+"." == ChallengePrefix {
		return "", fmt.Errorf("name %s: want %sDOMAIN", quote(name), ChallengePrefix)
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || len(label) > maxLabelLen {
			return "", fmt.Errorf("name %s: a label of %d bytes: want 1 to %d", quote(name), len(label), maxLabelLen)
		}
		for i := range len(label) {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return "", fmt.Errorf("name %s: want letters, digits, '-' and '_'", quote(name))
			}
		}
	}
	return n + ".", nil
}

// CheckChallengeValue checks that v is a DNS-01 TXT value: the base64url
// encoding, unpadded and canonical, of a SHA-256 digest (RFC 8555 §8.4).
func CheckChallengeValue(v string) error {
	if len(v) != ChallengeValueLen {
		return fmt.Errorf("value of %d bytes: want %d base64url characters", len(v), ChallengeValueLen)
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(v); err != nil {
		return fmt.Errorf("value %s is not base64url: %w", quote(v), err)
	}
	return nil
}

// quote quotes at most 64 bytes of s, for error messages about what a
// client sent.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strconv.Quote(s)
}

// Retry bounds of SendChallenge.
const (
	minChallengeRetry = 100 * time.Millisecond
	maxChallengeRetry = 10 * time.Second
)

// SendChallenge signs ch with key and sends it to the router at routerURL
// (its HTTP base URL, e.g. "http://127.0.0.1:8053"): POST for an add,
// DELETE for a delete. It fills ch.Peer from the key when empty and
// ch.Time with the current time at each try. While the router answers 503
// (ErrChallengeNotReady) it tries again after the answer's Retry-After
// (0.1 to 10 s; 1 s when absent) until ctx ends. A refusal yields an
// error wrapping the sentinel its status names (403:
// ErrChallengeRefused, which a forged challenge gets too; 400, 429, 503)
// and a *httpkit.ResponseError carrying the router's message.
func SendChallenge(ctx context.Context, c *http.Client, routerURL string, key *identity.Key, ch Challenge) error {
	if ch.Peer == "" {
		ch.Peer = key.ID.String()
	}
	method := http.MethodPost
	if ch.Op == OpDelete {
		method = http.MethodDelete
	}
	for {
		ch.Time = time.Now().UTC()
		retry, err := sendChallenge(ctx, c, method, routerURL, key, ch)
		if err == nil || retry < 0 {
			return err
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// sendChallenge makes one try of SendChallenge. It returns how long to
// wait before the next try, or -1 for none.
func sendChallenge(ctx context.Context, c *http.Client, method, routerURL string, key *identity.Key, ch Challenge) (time.Duration, error) {
	fail := func(err error) (time.Duration, error) {
		return -1, fmt.Errorf("dnsrouteapi: challenge %s %s: %w", ch.Op, ch.Name, err)
	}
	env, err := key.Sign(TypeChallenge, ch)
	if err != nil {
		return fail(err)
	}
	body, err := json.Marshal(env)
	if err != nil {
		return fail(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(routerURL, "/")+ChallengePath, bytes.NewReader(body))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return -1, nil
	}
	rerr := &httpkit.ResponseError{Method: method, URL: req.URL.Redacted(), Status: resp.StatusCode, Body: msg}
	var kind error
	switch resp.StatusCode {
	case http.StatusForbidden:
		kind = ErrChallengeRefused
	case http.StatusBadRequest:
		kind = ErrInvalidChallenge
	case http.StatusTooManyRequests:
		kind = ErrChallengeLimited
	case http.StatusServiceUnavailable:
		kind = ErrChallengeNotReady
	default:
		return fail(rerr)
	}
	_, err = fail(fmt.Errorf("%w: %w", kind, rerr))
	if kind != ErrChallengeNotReady {
		return -1, err
	}
	wait := time.Second
	if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil {
		wait = time.Duration(s) * time.Second
	}
	return min(max(wait, minChallengeRetry), maxChallengeRetry), err
}
