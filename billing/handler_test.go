package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	tl := newTestLedger(t, "", Config{Registry: reg})
	pub, edge := testkit.Key(t, 80), testkit.Key(t, 81)
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 100})
	tl.admit(t, edge)
	srv := httptest.NewServer(tl.Handler(reg))
	defer srv.Close()
	e0 := t0.Unix() - 60
	jsonOf := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := jsonOf(signBatch(t, edge, e0, 1, []billingapi.Record{rec(1, "blog", "c", 100, e0)}))
	tampered := signBatch(t, edge, e0, 2, []billingapi.Record{rec(2, "blog", "c", 100, e0)})
	tampered.Sig[0] ^= 1
	deposit := func(amount int64) []byte {
		return jsonOf(mustSign(t, tl.operator, billingapi.TypeDeposit, billingapi.Deposit{Account: pub.ID.String(), Amount: amount, Nonce: "n"}))
	}
	tests := []struct {
		name, method, path string
		body               []byte
		setup              func()
		code               int
		contains           string
	}{
		{"batch", "POST", "/api/v1/batches", good, nil, 200, `"accepted": 1`},
		{"same batch again", "POST", "/api/v1/batches", good, nil, 200, `"duplicate": true`},
		{"other content, same epoch", "POST", "/api/v1/batches",
			jsonOf(signBatch(t, edge, e0, 3, []billingapi.Record{rec(3, "blog", "c", 50, e0)})), nil, 409, `"reason": "replay_batch"`},
		{"bad signature", "POST", "/api/v1/batches", jsonOf(tampered), nil, 403, `"reason": "bad_signature"`},
		{"not JSON", "POST", "/api/v1/batches", []byte("{"), nil, 422, `"reason": "malformed"`},
		{"origin unreachable", "POST", "/api/v1/batches",
			jsonOf(signBatch(t, edge, e0-60, 4, []billingapi.Record{rec(4, "blog", "c", 100, e0-60)})),
			func() { tl.content.fail = errors.New("connection refused") }, 200, `"deferred": [`},
		{"pending record in the statement", "GET", "/api/v1/accounts/" + edge.ID.String() + "/statement", nil, nil, 200, `"serial": 4`},
		{"deposit", "POST", "/api/v1/deposits", deposit(10), func() { tl.content.fail = nil }, 200, `"balance": 10`},
		{"deposit nonce reused", "POST", "/api/v1/deposits", deposit(11), nil, 409, "conflict"},
		{"account", "GET", "/api/v1/accounts/" + pub.ID.String(), nil, nil, 200, `"kind": "publisher"`},
		{"account with no entries yet", "GET", "/api/v1/accounts/" + testkit.Key(t, 97).ID.String(), nil, nil, 200, `"balance": 0`},
		{"statement with no entries yet", "GET", "/api/v1/accounts/" + testkit.Key(t, 97).ID.String() + "/statement", nil, nil, 200, `"balance": 0`},
		{"account ID not a peer ID", "GET", "/api/v1/accounts/12D3KooWnobody", nil, nil, 422, `"reason": "malformed"`},
		{"account ID too long", "GET", "/api/v1/accounts/" + strings.Repeat("1", 4096), nil, nil, 422, "account ID over 128 bytes"},
		{"statement", "GET", "/api/v1/accounts/" + edge.ID.String() + "/statement", nil, nil, 200, `"reason": "replay_batch"`},
		{"accounts", "GET", "/api/v1/accounts", nil, nil, 200, TreasuryAccount},
		{"suspended", "GET", "/api/v1/suspended", nil, nil, 200, `"publishers": []`},
		{"no forfeits", "GET", "/api/v1/forfeits", nil, nil, 200, `"forfeits": []`},
		{"forfeits", "GET", "/api/v1/forfeits?since=" + strconv.FormatInt(t0.Unix()-1, 10), nil, func() {
			if err := tl.Forfeit(context.Background(), edge.ID.String(), e0, billingapi.ReasonWrongContent, "wrong bytes"); err != nil {
				t.Fatal(err)
			}
		}, 200, `"edge": "` + edge.ID.String() + `"`},
		{"forfeits since later", "GET", "/api/v1/forfeits?since=" + strconv.FormatInt(t0.Unix()+1, 10), nil, nil, 200, `"forfeits": []`},
		{"forfeits since not a number", "GET", "/api/v1/forfeits?since=yesterday", nil, nil, 422, `"reason": "malformed"`},
		{"settle", "POST", "/api/v1/settle", []byte("{}"), nil, 200, `"epochs"`},
		{"metrics", "GET", "/metrics", nil, nil, 200, `topcdn_billing_claims_total{kind="batch",reason="bad_signature",result="rejected"} 1`},
		{"health", "GET", "/healthz", nil, nil, 200, tl.operator.ID.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, bytes.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.contains) {
				t.Fatalf("%d %s, want %d containing %q", resp.StatusCode, body, tc.code, tc.contains)
			}
		})
	}
}
