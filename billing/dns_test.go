package billing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	blocks "github.com/ipfs/go-block-format"
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
		want    Reason
		wantErr bool
	}{
		{"right bytes", good.Cid().String(), "", false},
		{"wrong bytes", other.Cid().String(), ReasonWrongContent, true},
		{"not served: inconclusive", missing.Cid().String(), "", true},
		{"not a CID", "nope", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := HTTPProber{}.Probe(context.Background(), edge.URL, tc.cid)
			if (err != nil) != tc.wantErr || reasonOf(err) != tc.want {
				t.Fatalf("err %v, want reason %q", err, tc.want)
			}
		})
	}
}

func TestDNSDirectory(t *testing.T) {
	router := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/edges" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`[{"peer":"12D3KooWa","healthy":true,"load":0.5,"answers":7,"url":"http://127.0.0.1:8080","extra":1}]`))
	}))
	defer router.Close()
	edges, err := NewDNSDirectory(router.URL+"/", nil).Edges(context.Background())
	if err != nil || len(edges) != 1 || edges[0].Peer != "12D3KooWa" || !edges[0].Healthy || edges[0].Answers != 7 ||
		edges[0].URL != "http://127.0.0.1:8080" {
		t.Fatalf("edges %+v, %v", edges, err)
	}
	if _, err := NewDNSDirectory(router.URL+"/nothing", nil).Edges(context.Background()); err == nil {
		t.Fatal("a 404 from the router is not an error")
	}
}
