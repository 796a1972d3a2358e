package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// fuzzSeeds are batches signed by fixed keys: valid ones (so the fuzzer
// starts past the signature) and near misses.
func fuzzSeeds(t testing.TB) [][]byte {
	k := testkit.Key(t, 21)
	enc := func(env *identity.Envelope) []byte {
		b, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const epoch = 1_800_000_000 - 1_800_000_000%60
	withPath := rec(3, "blog", "bafy", 5, epoch)
	withPath.Path = "/docs/<index>.html"
	valid := signBatch(t, k, epoch, 1, []billingapi.Record{rec(1, "blog", "bafy", 10, epoch), rec(2, "", "bafz", 0, epoch), withPath})
	longPath := withPath
	longPath.Path = "/" + strings.Repeat("a", billingapi.MaxField)
	empty := signBatch(t, k, 60, 2, nil)
	tampered := *valid
	tampered.Body = bytes.Replace(valid.Body, []byte(`"bytes":10`), []byte(`"bytes":99`), 1)
	badRoot := mustOpen(t, valid)
	badRoot.MerkleRoot = make([]byte, 32)
	return [][]byte{enc(valid), enc(empty), enc(&tampered), enc(mustSign(t, k, billingapi.TypeBatch, badRoot)),
		[]byte(`{}`), []byte(`{"type":"topcdn/billing/batch/v1","signer":"x","body":"e30=","sig":""}`),
		enc(signBatch(t, k, epoch, 2, []billingapi.Record{longPath}))}
}

// FuzzDecodeBatch checks that DecodeBatch never panics, refuses with
// ErrMalformed or a bad signature, and that whatever it accepts is
// consistent: signed by its edge, its Merkle root matching its records,
// every record well formed.
func FuzzDecodeBatch(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, b, signer, err := billingapi.DecodeBatch(data)
		if err != nil {
			if !errors.Is(err, billingapi.ErrMalformed) && !errors.Is(err, identity.ErrBadSignature) {
				t.Fatalf("refusal without a cause: %v", err)
			}
			return
		}
		if b.Edge != signer.String() || env.Signer != b.Edge {
			t.Fatalf("batch of %s signed by %s", b.Edge, signer)
		}
		if !bytes.Equal(b.MerkleRoot, billingapi.MerkleRoot(b.Records)) || len(b.Salt) != billingapi.SaltSize || b.Epoch%b.EpochSeconds != 0 {
			t.Fatalf("accepted an inconsistent batch: %+v", b)
		}
		for _, r := range b.Records {
			if r.Bytes < 0 || len(r.Client) != billingapi.ClientHashSize || r.CID == "" || len(r.Path) > billingapi.MaxField {
				t.Fatalf("accepted a malformed record: %+v", r)
			}
		}
		// What was accepted decodes the same again.
		again, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if _, b2, _, err := billingapi.DecodeBatch(again); err != nil || b2.Seq != b.Seq || len(b2.Records) != len(b.Records) {
			t.Fatalf("re-encoded batch: %v", err)
		}
	})
}

// TestDecodeBatch covers the seeds' outcomes.
func TestDecodeBatch(t *testing.T) {
	seeds := fuzzSeeds(t)
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"valid", seeds[0], nil},
		{"no records", seeds[1], nil},
		{"tampered body", seeds[2], identity.ErrBadSignature},
		{"wrong merkle root", seeds[3], billingapi.ErrMalformed},
		{"empty envelope", seeds[4], billingapi.ErrMalformed},
		{"unsigned", seeds[5], billingapi.ErrMalformed},
		{"path over MaxField", seeds[6], billingapi.ErrMalformed},
		{"not JSON", []byte("\x00"), billingapi.ErrMalformed},
		{"unknown envelope field", []byte(`{"type":"x","extra":1}`), billingapi.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := billingapi.DecodeBatch(tc.data)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
		})
	}
}
