package identity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxEnvelopeSize bounds an encoded Envelope accepted by DecodeEnvelope.
const MaxEnvelopeSize = 1 << 20

// ErrBadSignature is returned when an envelope's signature does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// Bounds on the envelope's own fields, checked by Open before anything
// else: whoever sent an envelope is unknown until its signature verifies,
// so nothing of an unverified envelope may cost more than these bytes.
const (
	// MaxTypeSize bounds Envelope.Type.
	MaxTypeSize = 128
	// MaxSignerSize bounds Envelope.Signer: an ed25519 peer ID is 52
	// characters in base58.
	MaxSignerSize = 128
	// SignatureSize is the size of an ed25519 signature, Envelope.Sig.
	SignatureSize = 64
)

// quote returns s quoted for an error message, cut to 64 bytes.
func quote(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q… (%d bytes)", s[:64], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// Envelope is a signed message: a JSON body exactly as signed, its type,
// the signer's peer ID and an ed25519 signature over the type and body.
// Every signed wire format of topcdn (orders, heartbeats, manifests,
// receipts) travels in one; the type keeps a signature for one kind of
// message from being replayed as another.
type Envelope struct {
	// Type names the message kind, e.g. "topcdn/write-order/v1".
	Type string `json:"type"`
	// Signer is the signer's peer ID; its public key is inlined in it.
	Signer string `json:"signer"`
	// Body is the signed JSON message. It travels base64-encoded, so no
	// re-encoding of the envelope (indenting, say) can change its bytes.
	Body []byte `json:"body"`
	// Sig is the ed25519 signature over signedBytes(Type, Body).
	Sig []byte `json:"sig"`
}

func signedBytes(typ string, body []byte) []byte {
	b := make([]byte, 0, len(typ)+1+len(body))
	b = append(b, typ...)
	b = append(b, 0)
	return append(b, body...)
}

// Sign marshals body as JSON and signs it as a message of type typ.
func (k *Key) Sign(typ string, body any) (*Envelope, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("identity: sign %s: %w", typ, err)
	}
	sig, err := k.Private.Sign(signedBytes(typ, raw))
	if err != nil {
		return nil, fmt.Errorf("identity: sign %s: %w", typ, err)
	}
	return &Envelope{Type: typ, Signer: k.ID.String(), Body: raw, Sig: sig}, nil
}

// Open checks that the envelope is of type typ, that its fields are within
// their bounds (MaxSignerSize, SignatureSize) and that its signature
// verifies with the signer's key, then decodes the body into v. Its errors
// quote at most 64 bytes of any field. The body
// must be exactly what Sign would produce for v (no unknown fields, no
// other key case or spacing). It returns the signer.
func (e *Envelope) Open(typ string, v any) (peer.ID, error) {
	if e.Type != typ {
		return "", fmt.Errorf("identity: envelope is %s, want %q", quote(e.Type), typ)
	}
	if len(e.Signer) > MaxSignerSize {
		return "", fmt.Errorf("identity: envelope signer %s: over %d bytes", quote(e.Signer), MaxSignerSize)
	}
	signer, err := peer.Decode(e.Signer)
	if err != nil {
		return "", fmt.Errorf("identity: envelope signer %s: %w", quote(e.Signer), err)
	}
	if len(e.Sig) != SignatureSize {
		return "", fmt.Errorf("identity: %s signature is %d bytes, want %d: %w", typ, len(e.Sig), SignatureSize, ErrBadSignature)
	}
	pk, err := signer.ExtractPublicKey()
	if err != nil {
		return "", fmt.Errorf("identity: envelope signer %s: no inline public key: %w", signer, err)
	}
	ok, err := pk.Verify(signedBytes(e.Type, e.Body), e.Sig)
	if err != nil || !ok {
		return "", fmt.Errorf("identity: %s from %s: %w", typ, signer, ErrBadSignature)
	}
	dec := json.NewDecoder(bytes.NewReader(e.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return "", fmt.Errorf("identity: %s body: %w", typ, err)
	}
	// Go's decoder matches keys without regard to case and skips what it
	// cannot see; insist on the one encoding Sign produces, so every
	// verifier reads a signed body the same way.
	if canon, err := json.Marshal(v); err != nil || !bytes.Equal(canon, e.Body) {
		return "", fmt.Errorf("identity: %s body is not in canonical form", typ)
	}
	return signer, nil
}

// Encode returns the envelope as unpadded base64url JSON, fit for an HTTP
// header.
func (e *Envelope) Encode() (string, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// DecodeEnvelope parses what Encode returned.
func DecodeEnvelope(s string) (*Envelope, error) {
	if len(s) > MaxEnvelopeSize {
		return nil, fmt.Errorf("identity: envelope over %d bytes", MaxEnvelopeSize)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("identity: envelope: %w", err)
	}
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("identity: envelope: %w", err)
	}
	return &e, nil
}
