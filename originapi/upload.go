package originapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/identity"
)

// TypeUpload is the identity.Envelope type of an upload authorization.
const TypeUpload = "topcdn/upload/v1"

// UploadHeader is the request header of POST /api/v1/car that carries the
// upload authorization: an identity.Envelope of TypeUpload, as
// Envelope.Encode writes it. SignUpload makes one.
const UploadHeader = "Topcdn-Upload"

// UploadSkew is how far an upload authorization's time may be from the
// origin's clock, either way. The origin remembers a nonce for as long as
// its authorization is in this window.
const UploadSkew = 5 * time.Minute

// UploadAuthorization is the signed body of an upload authorization: a
// publisher's consent to one upload of one CAR, whose new bytes are
// charged to the publisher's quota.
type UploadAuthorization struct {
	// Roots are the CAR's header roots, in order; a CAR with other roots
	// is refused.
	Roots []string `json:"roots"`
	// BlocksSHA256 is the hex SHA-256 of the CAR's block CIDs in stream
	// order (see BlocksDigest). It binds the authorization to exactly
	// these blocks, so it cannot carry anything else.
	BlocksSHA256 string `json:"blocks_sha256"`
	// Time is when the authorization was signed; the origin accepts it
	// within UploadSkew of its own clock.
	Time time.Time `json:"time"`
	// Nonce is a random string of 16 to 64 characters. The origin refuses
	// a nonce it has already seen from the same key (a replay) with 409.
	Nonce string `json:"nonce"`
}

// BlocksDigest returns the SHA-256 of the binary CIDs cs, concatenated in
// order: what an UploadAuthorization signs for a CAR whose block sections
// carry these CIDs, duplicates included. CIDs are self-delimiting, so no
// two lists give the same input.
func BlocksDigest(cs []cid.Cid) []byte {
	h := sha256.New()
	for _, c := range cs {
		h.Write(c.Bytes())
	}
	return h.Sum(nil)
}

// SignUpload returns the UploadHeader value that authorizes key's upload
// of a CAR with these roots and these blocks (in the order written), signed
// now with a random nonce. It is good for one request within UploadSkew.
func SignUpload(key *identity.Key, roots, blocks []cid.Cid) (string, error) {
	nonce := make([]byte, 18)
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("originapi: sign upload: nonce: %w", err)
	}
	auth := UploadAuthorization{
		Roots:        make([]string, len(roots)),
		BlocksSHA256: hex.EncodeToString(BlocksDigest(blocks)),
		Time:         time.Now().UTC(),
		Nonce:        base64.RawURLEncoding.EncodeToString(nonce),
	}
	for i, r := range roots {
		auth.Roots[i] = r.String()
	}
	return SignUploadAuthorization(key, auth)
}

// SignUploadAuthorization signs auth with key and encodes it for
// UploadHeader. SignUpload fills auth for the common case.
func SignUploadAuthorization(key *identity.Key, auth UploadAuthorization) (string, error) {
	env, err := key.Sign(TypeUpload, auth)
	if err != nil {
		return "", fmt.Errorf("originapi: sign upload: %w", err)
	}
	s, err := env.Encode()
	if err != nil {
		return "", fmt.Errorf("originapi: sign upload: %w", err)
	}
	return s, nil
}
