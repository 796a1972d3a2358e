package origin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
	"go.uber.org/zap"
)

const (
	// maxUploadHeader bounds the UploadHeader value: 64 roots fit in ~8 KiB.
	maxUploadHeader = 16 << 10
	// minNonce and maxNonce bound an authorization's nonce, in characters.
	minNonce, maxNonce = 16, 64
)

// Upload is an upload the origin has authorized: who is charged for it
// and which CAR it must be.
type Upload struct {
	// Publisher is the key the upload is recorded and charged to. Required.
	Publisher peer.ID
	// Roots are the roots the CAR header must list, exactly and in order.
	Roots []cid.Cid
	// BlocksDigest, when set, is what BlocksDigest must give for the CAR's
	// blocks. AuthorizeUpload always sets it; nil skips the check.
	BlocksDigest []byte
}

// parseUploadAuth decodes and checks an UploadHeader value at time now:
// encoding, signature, time window, nonce, roots and digest. It does not
// look at the nonces already seen; AuthorizeUpload does.
func parseUploadAuth(header string, now time.Time) (Upload, *originapi.UploadAuthorization, error) {
	if header == "" {
		return Upload{}, nil, errorf(ErrUnauthorized,
			"uploads need a %s header: an upload authorization signed by the publisher's key (topcdn publish --key FILE)", originapi.UploadHeader)
	}
	if len(header) > maxUploadHeader {
		return Upload{}, nil, errorf(ErrUnauthorized, "%s header is %d bytes, at most %d allowed", originapi.UploadHeader, len(header), maxUploadHeader)
	}
	env, err := identity.DecodeEnvelope(header)
	if err != nil {
		return Upload{}, nil, errorf(ErrUnauthorized, "malformed %s header: %v", originapi.UploadHeader, err)
	}
	var auth originapi.UploadAuthorization
	signer, err := env.Open(originapi.TypeUpload, &auth)
	if err != nil {
		return Upload{}, nil, errorf(ErrForbidden, "upload authorization refused: %v", err)
	}
	if d := now.Sub(auth.Time); d > originapi.UploadSkew || d < -originapi.UploadSkew {
		return Upload{}, nil, errorf(ErrUnauthorized,
			"upload authorization from %s is stale or from the future (%s off the origin's clock, at most %s allowed); sign a new one, and check the clock",
			signer, d.Round(time.Second), originapi.UploadSkew)
	}
	if n := len(auth.Nonce); n < minNonce || n > maxNonce {
		return Upload{}, nil, errorf(ErrBadRequest, "upload authorization nonce is %d characters; want %d to %d", n, minNonce, maxNonce)
	}
	if len(auth.Roots) == 0 || len(auth.Roots) > maxRoots {
		return Upload{}, nil, errorf(ErrBadRequest, "upload authorization names %d roots; want 1 to %d", len(auth.Roots), maxRoots)
	}
	up := Upload{Publisher: signer, Roots: make([]cid.Cid, len(auth.Roots))}
	for i, s := range auth.Roots {
		if up.Roots[i], err = cid.Decode(s); err != nil {
			return Upload{}, nil, errorf(ErrBadRequest, "upload authorization roots[%d] %q: malformed CID: %v", i, s, err)
		}
	}
	if up.BlocksDigest, err = hex.DecodeString(auth.BlocksSHA256); err != nil || len(up.BlocksDigest) != sha256.Size {
		return Upload{}, nil, errorf(ErrBadRequest, "upload authorization blocks_sha256 %q is not a hex SHA-256", auth.BlocksSHA256)
	}
	return up, &auth, nil
}

// AuthorizeUpload checks an UploadHeader value: it must be an upload
// authorization whose signature verifies, signed within UploadSkew of the
// origin's clock, by a key allowed to upload (Config.Publishers), with a
// nonce not seen before from that key. It spends the nonce, so the same
// authorization is refused (409) from then on, whatever becomes of this
// upload, and returns the Upload to pass to Ingest.
func (o *Origin) AuthorizeUpload(ctx context.Context, header string) (Upload, error) {
	now := o.now()
	up, auth, err := parseUploadAuth(header, now)
	if err != nil {
		return Upload{}, err
	}
	if err := o.checkAdmitted(up.Publisher); err != nil {
		return Upload{}, err
	}
	if err := o.checkFunds(ctx, up.Publisher); err != nil {
		return Upload{}, err
	}
	err = sqldb.InTx(ctx, o.db, func(tx *sqldb.Tx) error {
		// A nonce older than the window cannot come back: its
		// authorization is refused as stale.
		if _, err := tx.ExecContext(ctx, `DELETE FROM upload_nonces WHERE signed_at < ?`, now.Add(-originapi.UploadSkew).UnixNano()); err != nil {
			return fmt.Errorf("origin: prune upload nonces: %w", err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO upload_nonces (signer, nonce, signed_at) VALUES (?, ?, ?)
			ON CONFLICT (signer, nonce) DO NOTHING`, up.Publisher.String(), auth.Nonce, auth.Time.UnixNano())
		if err != nil {
			return fmt.Errorf("origin: spend upload nonce: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errorf(ErrConflict, "upload authorization from %s was already used (nonce %q); sign a new one for each upload", up.Publisher, auth.Nonce)
		}
		return nil
	})
	if err != nil {
		return Upload{}, err
	}
	return up, nil
}

// checkAdmitted refuses a publisher Config.Publishers does not list.
func (o *Origin) checkAdmitted(p peer.ID) error {
	if o.publishers != nil && !o.publishers[p] {
		return errorf(ErrForbidden, "key %s may not upload to this origin", p)
	}
	return nil
}

// checkFunds asks Config.Funds, if set, whether publisher p can pay.
func (o *Origin) checkFunds(ctx context.Context, p peer.ID) error {
	f := o.cfg.Funds
	if f == nil {
		return nil
	}
	ok, err := f.CanPay(ctx, p)
	if err != nil {
		o.log.Warn("billing cannot tell whether a publisher can pay", zap.Stringer("publisher", p), zap.Error(err))
		return errorf(ErrBusy, "cannot tell whether %s can pay (billing: %v); retry shortly", p, err)
	}
	if !ok {
		return errorf(ErrPaymentRequired, "publisher %s has no funds at billing, or is suspended: deposit first", p)
	}
	return nil
}

// Funds is billing's view of publishers' accounts, as the origin needs it.
// cmd/topcdn implements it over billing's HTTP API.
type Funds interface {
	// CanPay reports whether publisher's account can pay for more
	// content: funded and not suspended. An error means billing could
	// not tell.
	CanPay(ctx context.Context, publisher peer.ID) (bool, error)
}

// sameRoots reports whether a and b list the same CIDs in the same order.
func sameRoots(a, b []cid.Cid) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equals(b[i]) {
			return false
		}
	}
	return true
}
