package dnsrouteapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/testkit"
)

// testValue is a well-formed challenge value.
const testValue = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"

func TestOpenChallenge(t *testing.T) {
	key, other := testkit.Key(t, 1), testkit.Key(t, 2)
	at := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)
	ok := Challenge{Peer: key.ID.String(), Op: OpAdd, Name: "_acme-challenge.cdn.test.", Value: testValue, Time: at}
	with := func(f func(c *Challenge)) Challenge {
		c := ok
		f(&c)
		return c
	}
	sign := func(k *identity.Key, c Challenge) *identity.Envelope {
		env, err := k.Sign(TypeChallenge, c)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	tests := []struct {
		name    string
		env     *identity.Envelope
		wantErr error
		fqdn    string
	}{
		{"add", sign(key, ok), nil, "_acme-challenge.cdn.test."},
		{"name in upper case without the dot", sign(key, with(func(c *Challenge) { c.Name = "_ACME-challenge.IPFS.cdn.test" })), nil,
			"_acme-challenge.ipfs.cdn.test."},
		{"delete without a value", sign(key, with(func(c *Challenge) { c.Op, c.Value = OpDelete, "" })), nil, "_acme-challenge.cdn.test."},
		{"forged signature", func() *identity.Envelope { e := sign(key, ok); e.Sig[0] ^= 1; return e }(), ErrForgedChallenge, ""},
		{"peer is not the signer", sign(other, ok), ErrForgedChallenge, ""},
		{"a heartbeat's type", func() *identity.Envelope { e := sign(key, ok); e.Type = TypeHeartbeat; return e }(), ErrInvalidChallenge, ""},
		{"unknown op", sign(key, with(func(c *Challenge) { c.Op = "set" })), ErrInvalidChallenge, ""},
		{"not an _acme-challenge name", sign(key, with(func(c *Challenge) { c.Name = "blog.cdn.test." })), ErrInvalidChallenge, ""},
		{"the prefix alone", sign(key, with(func(c *Challenge) { c.Name = "_acme-challenge." })), ErrInvalidChallenge, ""},
		{"empty label", sign(key, with(func(c *Challenge) { c.Name = "_acme-challenge..cdn.test." })), ErrInvalidChallenge, ""},
		{"label over 63 bytes", sign(key, with(func(c *Challenge) { c.Name = "_acme-challenge." + strings.Repeat("a", 64) + ".test." })),
			ErrInvalidChallenge, ""},
		{"name over 253 bytes", sign(key, with(func(c *Challenge) {
			c.Name = "_acme-challenge." + strings.Repeat(strings.Repeat("a", 60)+".", 4) + "test."
		})), ErrInvalidChallenge, ""},
		{"space in the name", sign(key, with(func(c *Challenge) { c.Name = "_acme-challenge.cdn test." })), ErrInvalidChallenge, ""},
		{"add without a value", sign(key, with(func(c *Challenge) { c.Value = "" })), ErrInvalidChallenge, ""},
		{"value too short", sign(key, with(func(c *Challenge) { c.Value = testValue[1:] })), ErrInvalidChallenge, ""},
		{"value in standard base64", sign(key, with(func(c *Challenge) { c.Value = testValue[:40] + "+" + testValue[41:] })), ErrInvalidChallenge, ""},
		{"value with trailing bits", sign(key, with(func(c *Challenge) { c.Value = testValue[:42] + "1" })), ErrInvalidChallenge, ""},
		{"no time", sign(key, with(func(c *Challenge) { c.Time = time.Time{} })), ErrInvalidChallenge, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := OpenChallenge(tc.env)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && (ch.FQDN != tc.fqdn || ch.PeerID != key.ID) {
				t.Fatalf("opened %+v, want FQDN %q", ch, tc.fqdn)
			}
		})
	}
}

// TestSendChallenge: adds are POSTed and deletes DELETEd, signed and
// timed at each try; a 503 is tried again after its Retry-After until the
// router takes it; other refusals end at once, wrapping their sentinel.
func TestSendChallenge(t *testing.T) {
	key := testkit.Key(t, 1)
	var tries atomic.Int64
	var notReady atomic.Int64 // 503s still to answer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		body, _ := io.ReadAll(r.Body)
		var env identity.Envelope
		if r.URL.Path != ChallengePath || json.Unmarshal(body, &env) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		ch, err := OpenChallenge(&env)
		switch {
		case err != nil:
			httpkit.WriteJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		case (ch.Op == OpAdd) != (r.Method == http.MethodPost):
			http.Error(w, "method", http.StatusMethodNotAllowed)
		case ch.Name == "_acme-challenge.limited.test.":
			w.WriteHeader(http.StatusTooManyRequests)
		case notReady.Add(-1) >= 0:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	send := func(ctx context.Context, ch Challenge) error {
		return SendChallenge(ctx, srv.Client(), srv.URL+"/", key, ch)
	}
	add := Challenge{Op: OpAdd, Name: "_acme-challenge.cdn.test.", Value: testValue}

	if err := send(ctx, add); err != nil || tries.Load() != 1 {
		t.Fatalf("add: %v after %d tries", err, tries.Load())
	}
	if err := send(ctx, Challenge{Op: OpDelete, Name: add.Name}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	tries.Store(0)
	notReady.Store(3)
	if err := send(ctx, add); err != nil || tries.Load() != 4 {
		t.Fatalf("add while not ready: %v after %d tries, want 4", err, tries.Load())
	}

	notReady.Store(1 << 20)
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := send(tctx, add); !errors.Is(err, ErrChallengeNotReady) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("add never ready: %v", err)
	}
	notReady.Store(0)

	tests := []struct {
		name string
		ch   Challenge
		want error
	}{
		{"refused", Challenge{Peer: testkit.Key(t, 2).ID.String(), Op: OpAdd, Name: add.Name, Value: testValue}, ErrChallengeRefused},
		{"limited", Challenge{Op: OpAdd, Name: "_acme-challenge.limited.test.", Value: testValue}, ErrChallengeLimited},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tries.Store(0)
			err := send(ctx, tc.ch)
			var re *httpkit.ResponseError
			if !errors.Is(err, tc.want) || !errors.As(err, &re) || tries.Load() != 1 {
				t.Fatalf("err = %v after %d tries, want %v once", err, tries.Load(), tc.want)
			}
		})
	}
}
