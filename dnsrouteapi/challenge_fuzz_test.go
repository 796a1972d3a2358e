package dnsrouteapi

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// FuzzChallenge feeds arbitrary challenge bodies, validly signed, through
// the challenge parser. It must never panic, and what it accepts must hold
// the invariants the router's table relies on: the signer's peer, a known
// op, an _acme-challenge name in canonical form within DNS's bounds, a
// value of the digest's form (or none, in a delete). testdata holds the
// edge cases of names and values, signed by the seed's peer.
func FuzzChallenge(f *testing.F) {
	// A key from a seed: the corpus in testdata names its peer, so that
	// its entries get past the signer check.
	key := testkit.Key(f, 7)
	at := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)
	for _, ch := range []Challenge{
		{Peer: key.ID.String(), Op: OpAdd, Name: "_acme-challenge.cdn.test.", Value: strings.Repeat("A", 43), Time: at},
		{Peer: key.ID.String(), Op: OpAdd, Name: "_ACME-Challenge.ipfs.CDN.test", Value: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", Time: at},
		{Peer: key.ID.String(), Op: OpDelete, Name: "_acme-challenge.ipns.cdn.test.", Time: at},
		{Peer: key.ID.String(), Op: OpDelete, Name: "_acme-challenge.www.example.org.", Value: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX1", Time: at},
		{Peer: key.ID.String(), Op: "set", Name: "_acme-challenge.cdn.test.", Time: at},
	} {
		b, err := json.Marshal(ch)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msg := append(append([]byte(TypeChallenge), 0), body...)
		sig, err := key.Private.Sign(msg)
		if err != nil {
			t.Fatal(err)
		}
		env := &identity.Envelope{Type: TypeChallenge, Signer: key.ID.String(), Body: body, Sig: sig}
		ch, err := OpenChallenge(env)
		if err != nil {
			return
		}
		if ch.PeerID != key.ID || (ch.Op != OpAdd && ch.Op != OpDelete) || ch.Time.IsZero() {
			t.Fatalf("accepted %+v", ch)
		}
		if !strings.HasPrefix(ch.FQDN, ChallengePrefix) || !strings.HasSuffix(ch.FQDN, ".") ||
			len(ch.FQDN) > maxNameLen+1 || ch.FQDN != strings.ToLower(ch.FQDN) || strings.Contains(ch.FQDN, "..") {
			t.Fatalf("accepted name %q as %q", ch.Name, ch.FQDN)
		}
		if (ch.Op == OpAdd || ch.Value != "") && CheckChallengeValue(ch.Value) != nil {
			t.Fatalf("accepted value %q", ch.Value)
		}
	})
}
