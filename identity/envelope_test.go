package identity

import (
	"errors"
	"strings"
	"testing"
)

type testMsg struct {
	Shard string `json:"shard"`
	Size  int64  `json:"size"`
}

func TestEnvelope(t *testing.T) {
	alice, _ := Generate(nil)
	mallory, _ := Generate(nil)
	env, err := alice.Sign("topcdn/test/v1", testMsg{Shard: "s1", Size: 42})
	if err != nil {
		t.Fatal(err)
	}
	s, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEnvelope(s)
	if err != nil {
		t.Fatal(err)
	}
	var m testMsg
	signer, err := got.Open("topcdn/test/v1", &m)
	if err != nil || signer != alice.ID || m.Size != 42 {
		t.Fatalf("Open = %v, %v, %+v", signer, err, m)
	}

	tamper := func(f func(e *Envelope)) *Envelope {
		e := *env
		e.Body = append([]byte(nil), env.Body...)
		e.Sig = append([]byte(nil), env.Sig...)
		f(&e)
		return &e
	}
	tests := []struct {
		name string
		env  *Envelope
		typ  string
		bad  error
	}{
		{"other type", env, "topcdn/other/v1", nil},
		{"inflated body", tamper(func(e *Envelope) { e.Body = []byte(`{"shard":"s1","size":4200}`) }), "topcdn/test/v1", ErrBadSignature},
		{"other signer", tamper(func(e *Envelope) { e.Signer = mallory.ID.String() }), "topcdn/test/v1", ErrBadSignature},
		{"retyped", tamper(func(e *Envelope) { e.Type = "topcdn/other/v1" }), "topcdn/other/v1", ErrBadSignature},
		{"flipped sig", tamper(func(e *Envelope) { e.Sig[0] ^= 1 }), "topcdn/test/v1", ErrBadSignature},
		{"garbage signer", tamper(func(e *Envelope) { e.Signer = "nope" }), "topcdn/test/v1", nil},
		{"huge signer", tamper(func(e *Envelope) { e.Signer = strings.Repeat("1", 20<<20) }), "topcdn/test/v1", nil},
		{"huge type", tamper(func(e *Envelope) { e.Type = strings.Repeat("t", 20<<20) }), "topcdn/test/v1", nil},
		{"short sig", tamper(func(e *Envelope) { e.Sig = e.Sig[:63] }), "topcdn/test/v1", ErrBadSignature},
		{"long sig", tamper(func(e *Envelope) { e.Sig = append(e.Sig, 0) }), "topcdn/test/v1", ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m testMsg
			_, err := tc.env.Open(tc.typ, &m)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if tc.bad != nil && !errors.Is(err, tc.bad) {
				t.Fatalf("err = %v, want %v", err, tc.bad)
			}
			// Whoever sent it is unknown: the error must not carry the
			// sender's bytes at length (into logs and databases).
			if n := len(err.Error()); n > 512 {
				t.Fatalf("error is %d bytes long", n)
			}
		})
	}
	// A body with unknown fields is refused even when signed.
	extra, _ := alice.Sign("topcdn/test/v1", map[string]any{"shard": "s", "size": 1, "admin": true})
	if _, err := extra.Open("topcdn/test/v1", &m); err == nil {
		t.Fatal("unknown field accepted")
	}
	// Keys in another case would decode the same in Go but not elsewhere.
	recased := &Envelope{Type: "topcdn/test/v1", Signer: alice.ID.String(), Body: []byte(`{"SHARD":"s1","size":42}`)}
	recased.Sig, _ = alice.Private.Sign(signedBytes(recased.Type, recased.Body))
	if _, err := recased.Open("topcdn/test/v1", &m); err == nil {
		t.Fatal("non-canonical body accepted")
	}
	for _, s := range []string{"", "!!!", "e30"} {
		if e, err := DecodeEnvelope(s); err == nil {
			if _, err := e.Open("topcdn/test/v1", &m); err == nil {
				t.Fatalf("DecodeEnvelope(%q) opened", s)
			}
		}
	}
}
