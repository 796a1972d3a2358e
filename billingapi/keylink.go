package billingapi

import (
	"time"

	"github.com/topcdn/topcdn/identity"
)

// Envelope types of key links: one account paying for several publisher
// keys (one per site).
const (
	// TypeKeyLink is a KeyLink signed by its Account.
	TypeKeyLink = "topcdn/billing/key-link/v1"
	// TypeKeyConsent is a KeyConsent signed by its Key.
	TypeKeyConsent = "topcdn/billing/key-consent/v1"
	// TypeKeyUnlink is a KeyUnlink signed by its Account.
	TypeKeyUnlink = "topcdn/billing/key-unlink/v1"
)

// KeyLinkSkew is how far a link's, a consent's or an unlink's Time may be
// from billing's clock.
const KeyLinkSkew = 5 * time.Minute

// KeyLink asks billing to debit Account, from the next epoch on, for what
// the publisher key Key is charged; signed by Account (TypeKeyLink), the
// body of POST /api/v1/accounts/{account}/keys. Both parties sign: without
// the account's signature anyone could charge an account; without the
// key's (Consent) an account could take over another publisher's figures
// and suspension fate.
type KeyLink struct {
	// Account is the paying account's peer ID; it must be the signer.
	Account string `json:"account"`
	// Key is the publisher key's peer ID.
	Key string `json:"key"`
	// Time is when the account signed, within KeyLinkSkew of billing's
	// clock.
	Time time.Time `json:"time"`
	// Consent is the key's KeyConsent to the same Account and Key, signed
	// by Key (TypeKeyConsent).
	Consent *identity.Envelope `json:"consent"`
}

// KeyConsent is a publisher key's consent to be paid for by Account;
// signed by Key (TypeKeyConsent).
type KeyConsent struct {
	Account string    `json:"account"`
	Key     string    `json:"key"`
	Time    time.Time `json:"time"`
}

// KeyUnlink ends the open link of Key to Account from the next epoch on;
// signed by Account alone (TypeKeyUnlink), the body of
// DELETE /api/v1/accounts/{account}/keys/{key}.
type KeyUnlink struct {
	Account string    `json:"account"`
	Key     string    `json:"key"`
	Time    time.Time `json:"time"`
}

// KeyLinkInfo is one link of a key to the account that pays for it, over
// the epochs [FromEpoch, UntilEpoch).
type KeyLinkInfo struct {
	// Account pays for Key.
	Account string `json:"account"`
	// Key is the publisher key.
	Key string `json:"key"`
	// FromEpoch is the first epoch (start, Unix seconds) Account pays:
	// the epoch after the link was made.
	FromEpoch int64 `json:"from_epoch"`
	// UntilEpoch is the first epoch Account no longer pays; absent (0)
	// while the link is open.
	UntilEpoch int64 `json:"until_epoch,omitempty"`
}

// KeyLinksResponse is the answer of GET /api/v1/accounts/{account}/keys:
// every link of the account, open and ended, oldest first.
type KeyLinksResponse struct {
	Keys []KeyLinkInfo `json:"keys"`
}

// SignKeyLink signs a link of key to account at now: key's consent, then
// the account's link around it.
func SignKeyLink(account, key *identity.Key, now time.Time) (*identity.Envelope, error) {
	now = now.UTC()
	consent, err := key.Sign(TypeKeyConsent, KeyConsent{Account: account.ID.String(), Key: key.ID.String(), Time: now})
	if err != nil {
		return nil, err
	}
	return account.Sign(TypeKeyLink, KeyLink{Account: account.ID.String(), Key: key.ID.String(), Time: now, Consent: consent})
}

// SignKeyUnlink signs the end of key's link to account at now.
func SignKeyUnlink(account *identity.Key, key string, now time.Time) (*identity.Envelope, error) {
	return account.Sign(TypeKeyUnlink, KeyUnlink{Account: account.ID.String(), Key: key, Time: now.UTC()})
}
