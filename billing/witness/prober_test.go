package witness

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	blocks "github.com/ipfs/go-block-format"

	"github.com/topcdn/topcdn/billingapi"
)

func TestHTTPProber(t *testing.T) {
	good := blocks.NewBlock([]byte("the object as published"))
	other := blocks.NewBlock([]byte("something else"))
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ipfs/" + good.Cid().String():
			w.Write(good.RawData())
		case "/ipfs/" + other.Cid().String():
			w.Write([]byte("tampered bytes")) // a lying edge
		default:
			http.NotFound(w, r)
		}
	}))
	defer edge.Close()
	missing := blocks.NewBlock([]byte("never cached"))
	tests := []struct {
		name    string
		cid     string
		want    billingapi.Reason
		wantErr bool
		bytes   int64 // body bytes read: what the edge bills for the probe
	}{
		{"right bytes", good.Cid().String(), "", false, int64(len(good.RawData()))},
		{"wrong bytes", other.Cid().String(), billingapi.ReasonWrongContent, true, int64(len("tampered bytes"))},
		{"not served: inconclusive", missing.Cid().String(), "", true, 0},
		{"not a CID", "nope", "", true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := HTTPProber{}.Probe(context.Background(), edge.URL, tc.cid)
			if n != tc.bytes {
				t.Errorf("read %d bytes, want %d", n, tc.bytes)
			}
			var re *billingapi.RejectError
			if errors.As(err, &re) != (tc.want != "") || (err != nil) != tc.wantErr || (re != nil && re.Reason != tc.want) {
				t.Fatalf("err %v, want reason %q", err, tc.want)
			}
		})
	}
}
