package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
)

// TestBillingFunds: `topcdn origin --billing` lets a publisher upload only
// if billing reports a positive balance; an account billing does not know
// has none, and a billing that fails is an error (the origin answers 503),
// not a refusal. A key linked to an account has the account's funds.
func TestBillingFunds(t *testing.T) {
	keys := map[string]*identity.Key{}
	for _, n := range []string{"rich", "broke", "unknown", "down", "site of rich", "site of broke"} {
		k, err := identity.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = k
	}
	balances := map[peer.ID]int64{keys["rich"].ID: 5, keys["broke"].ID: 0, keys["site of rich"].ID: 0, keys["site of broke"].ID: 7}
	payers := map[peer.ID]string{keys["site of rich"].ID: keys["rich"].ID.String(), keys["site of broke"].ID: keys["broke"].ID.String()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := peer.Decode(r.PathValue("id"))
		switch {
		case err != nil:
			http.Error(w, `{"error":"bad id"}`, http.StatusBadRequest)
		case id == keys["down"].ID:
			http.Error(w, `{"error":"database locked"}`, http.StatusInternalServerError)
		default:
			b, ok := balances[id]
			if !ok {
				http.Error(w, `{"error":"no such account"}`, http.StatusNotFound)
				return
			}
			json.NewEncoder(w).Encode(billingapi.Account{ID: id.String(), Kind: "publisher", Balance: b, Payer: payers[id]})
		}
	}))
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/accounts/{id}", srv.Config.Handler)
	srv.Config.Handler = mux
	defer srv.Close()
	f := billingFunds{billingapi.NewClient(srv.URL, nil)}
	for _, tc := range []struct {
		key     string
		ok, err bool
	}{
		{"rich", true, false},
		{"broke", false, false},
		{"unknown", false, false},
		{"down", false, true},
		{"site of rich", true, false},
		{"site of broke", false, false}, // its own funds do not count: the account pays
	} {
		ok, err := f.CanPay(context.Background(), keys[tc.key].ID)
		if ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%s: CanPay = %v, %v; want %v, error %v", tc.key, ok, err, tc.ok, tc.err)
		}
	}
}
