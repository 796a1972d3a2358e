package billingapi

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/tick"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// Client talks to a billing service.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client of the billing service at base. If hc is
// nil, a client with a 30 s timeout is used.
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimRight(base, "/"), http: hc}
}

// APIError is a billing service's error answer.
type APIError struct {
	Status int
	ErrorResponse
}

// Error returns the status and the service's message.
func (e *APIError) Error() string {
	return fmt.Sprintf("billing: HTTP %d: %s", e.Status, e.ErrorResponse.Error)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("billing: %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("billing: %s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	err = httpkit.DoJSON(c.http, req, 64<<20, out)
	var re *httpkit.ResponseError
	switch {
	case errors.As(err, &re):
		e := &APIError{Status: re.Status}
		if json.Unmarshal(re.Body, &e.ErrorResponse) != nil || e.ErrorResponse.Error == "" {
			e.ErrorResponse.Error = re.Message()
		}
		return e
	case err != nil:
		return fmt.Errorf("billing: %w", err) // names the request
	}
	return nil
}

// Deposit signs a deposit of amount to account with the operator's key
// and sends it. An empty nonce is replaced by a random one.
func (c *Client) Deposit(ctx context.Context, operator *identity.Key, account string, amount int64, nonce string) (*Account, error) {
	if nonce == "" {
		nonce = randomHex(16)
	}
	env, err := operator.Sign(TypeDeposit, Deposit{Account: account, Amount: amount, Nonce: nonce})
	if err != nil {
		return nil, err
	}
	var a Account
	return &a, c.do(ctx, http.MethodPost, "/api/v1/deposits", env, &a)
}

// Admit signs an admission of edge (or its revocation) with the
// operator's key and sends it. An empty nonce is replaced by a random one.
func (c *Client) Admit(ctx context.Context, operator *identity.Key, edge string, revoke bool, nonce string) (*AdmittedEdge, error) {
	if nonce == "" {
		nonce = randomHex(16)
	}
	env, err := operator.Sign(TypeAdmission, Admission{Edge: edge, Revoke: revoke, Nonce: nonce})
	if err != nil {
		return nil, err
	}
	var a AdmittedEdge
	return &a, c.do(ctx, http.MethodPost, "/api/v1/admissions", env, &a)
}

// Admitted returns the edges admitted now.
func (c *Client) Admitted(ctx context.Context) ([]AdmittedEdge, error) {
	var r AdmittedResponse
	return r.Edges, c.do(ctx, http.MethodGet, AdmittedPath, nil, &r)
}

// Account returns one account.
func (c *Client) Account(ctx context.Context, id string) (*Account, error) {
	var a Account
	return &a, c.do(ctx, http.MethodGet, "/api/v1/accounts/"+url.PathEscape(id), nil, &a)
}

// LinkKey links key to account: from the next epoch on, account pays
// for what key is charged. It signs key's consent and account's link
// (SignKeyLink) and sends them. Linking a key already linked to the same
// account answers its link again.
func (c *Client) LinkKey(ctx context.Context, account, key *identity.Key) (*KeyLinkInfo, error) {
	env, err := SignKeyLink(account, key, time.Now())
	if err != nil {
		return nil, err
	}
	var li KeyLinkInfo
	return &li, c.do(ctx, http.MethodPost, "/api/v1/accounts/"+url.PathEscape(account.ID.String())+"/keys", env, &li)
}

// UnlinkKey ends key's link to account from the next epoch on; the
// unlink, signed by account, travels in the request body.
func (c *Client) UnlinkKey(ctx context.Context, account *identity.Key, key string) (*KeyLinkInfo, error) {
	env, err := SignKeyUnlink(account, key, time.Now())
	if err != nil {
		return nil, err
	}
	var li KeyLinkInfo
	return &li, c.do(ctx, http.MethodDelete, "/api/v1/accounts/"+url.PathEscape(account.ID.String())+"/keys/"+url.PathEscape(key), env, &li)
}

// KeyLinks returns every link of account, open and ended.
func (c *Client) KeyLinks(ctx context.Context, account string) ([]KeyLinkInfo, error) {
	var r KeyLinksResponse
	return r.Keys, c.do(ctx, http.MethodGet, "/api/v1/accounts/"+url.PathEscape(account)+"/keys", nil, &r)
}

// Accounts returns every account.
func (c *Client) Accounts(ctx context.Context) ([]Account, error) {
	var as []Account
	return as, c.do(ctx, http.MethodGet, "/api/v1/accounts", nil, &as)
}

// Statement returns an account's statement.
func (c *Client) Statement(ctx context.Context, id string) (*Statement, error) {
	var s Statement
	return &s, c.do(ctx, http.MethodGet, "/api/v1/accounts/"+url.PathEscape(id)+"/statement", nil, &s)
}

// Settle settles every closed epoch.
func (c *Client) Settle(ctx context.Context) (*SettleResult, error) {
	var r SettleResult
	return &r, c.do(ctx, http.MethodPost, "/api/v1/settle", struct{}{}, &r)
}

// Suspended returns the suspended publishers.
func (c *Client) Suspended(ctx context.Context) ([]string, error) {
	var r SuspendedResponse
	return r.Publishers, c.do(ctx, http.MethodGet, "/api/v1/suspended", nil, &r)
}

// Forfeits returns the epochs edges forfeited at or after since.
func (c *Client) Forfeits(ctx context.Context, since time.Time) ([]ForfeitInfo, error) {
	var r ForfeitsResponse
	return r.Forfeits, c.do(ctx, http.MethodGet, "/api/v1/forfeits?since="+strconv.FormatInt(since.Unix(), 10), nil, &r)
}

// Claim signs and sends a storage peer's claim.
func (c *Client) Claim(ctx context.Context, key *identity.Key, orders []ClaimedOrder) (*ClaimResult, error) {
	env, err := key.Sign(TypeClaim, Claim{Peer: key.ID.String(), Nonce: randomHex(8), Orders: orders})
	if err != nil {
		return nil, err
	}
	var r ClaimResult
	return &r, c.do(ctx, http.MethodPost, "/api/v1/claims", env, &r)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ServedReadSource is what a storage peer offers a claimer: its served
// read orders and a way to drop the ones billing collected.
// *storage.Server implements it.
type ServedReadSource interface {
	ServedReads(ctx context.Context, after int64, limit int) ([]storageapi.ServedRead, error)
	PruneServedReads(ctx context.Context, upto int64) (int64, error)
}

// ClaimOnce claims the served reads of src in pages and prunes what
// billing collected (accepted or refused for good); reads billing
// deferred, and those after them, stay for the next round. It returns how
// many orders were accepted.
func ClaimOnce(ctx context.Context, c *Client, key *identity.Key, src ServedReadSource) (int, error) {
	const page = 1000
	var (
		after    int64
		accepted int
	)
	for {
		reads, err := src.ServedReads(ctx, after, page)
		if err != nil || len(reads) == 0 {
			return accepted, err
		}
		orders := make([]ClaimedOrder, len(reads))
		for i, r := range reads {
			orders[i] = ClaimedOrder{ID: r.ID, Order: r.Envelope}
		}
		res, err := c.Claim(ctx, key, orders)
		if err != nil {
			return accepted, err
		}
		accepted += res.Accepted
		upto := reads[len(reads)-1].ID
		for _, id := range res.Deferred {
			upto = min(upto, id-1)
		}
		if upto > 0 {
			if _, err := src.PruneServedReads(ctx, upto); err != nil {
				return accepted, err
			}
		}
		if len(res.Deferred) > 0 || len(reads) < page {
			return accepted, nil
		}
		after = reads[len(reads)-1].ID
	}
}

// DefaultClaimInterval is RunClaimer's interval when given none.
const DefaultClaimInterval = time.Minute

// RunClaimer claims src's served reads every interval until ctx ends. An
// interval of zero is DefaultClaimInterval; a negative one turns claims
// off (RunClaimer returns at once).
func RunClaimer(ctx context.Context, c *Client, key *identity.Key, src ServedReadSource, every time.Duration, log *zap.Logger) {
	if every < 0 {
		return
	}
	tick.NowAndEvery(ctx, cmp.Or(every, DefaultClaimInterval), func(ctx context.Context) {
		n, err := ClaimOnce(ctx, c, key, src)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("billing claim failed; will retry", zap.Error(err))
		case n > 0:
			log.Info("billing claim accepted", zap.Int("orders", n))
		}
	})
}
