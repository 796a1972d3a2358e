package caddymodule

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr bool
	}{
		{name: "origin as argument", input: `topcdn http://127.0.0.1:8081`,
			want: Handler{Origin: "http://127.0.0.1:8081"}},
		{name: "full block", input: `topcdn {
				origin http://o:8081
				origin_id 12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA
				domain cdn.example
				memory_cache 64MiB
				disk_cache /var/cache/topcdn 2GiB
				key /etc/topcdn/edge.key
			}`,
			want: Handler{Origin: "http://o:8081", OriginID: "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
				Domain: "cdn.example", MemoryCacheBytes: 64 << 20, DiskCacheDir: "/var/cache/topcdn",
				DiskCacheBytes: 2 << 30, KeyFile: "/etc/topcdn/edge.key"}},
		{name: "disk cache without size", input: `topcdn http://o { 
				disk_cache /c 
			}`, want: Handler{Origin: "http://o", DiskCacheDir: "/c"}},
		{name: "static DNSLink records", input: `topcdn http://o {
				dnslink blog.example.org /ipfs/bafkqaaa
				dnslink docs.example.org /ipns/k51qzi5uqu5dlxdsdu5fpuu7h69wu4ohp32iwm9pdt9nq3y5rpn3ln9j12zfhe
			}`, want: Handler{Origin: "http://o", DNSLinks: map[string]string{"blog.example.org": "/ipfs/bafkqaaa",
			"docs.example.org": "/ipns/k51qzi5uqu5dlxdsdu5fpuu7h69wu4ohp32iwm9pdt9nq3y5rpn3ln9j12zfhe"}}},
		{name: "router and billing", input: `topcdn http://o {
				router http://127.0.0.1:8053
				public_url http://127.1.0.1:8080
				public_addr 127.1.0.1 ::1
				city "São Paulo"
				location -23.55,-46.63
				capacity 5000
				heartbeat 2s
				billing http://127.0.0.1:7080
				billing_epoch 1m
			}`, want: Handler{Origin: "http://o", Router: "http://127.0.0.1:8053", PublicURL: "http://127.1.0.1:8080",
			PublicAddrs: []string{"127.1.0.1", "::1"}, City: "São Paulo", Location: "-23.55,-46.63", Capacity: 5000,
			HeartbeatInterval: caddy.Duration(2 * time.Second), Billing: "http://127.0.0.1:7080",
			BillingEpoch: caddy.Duration(time.Minute)}},
		{name: "name stream off", input: "topcdn http://o {\n name_stream off\n}", want: Handler{Origin: "http://o", NameStream: new(false)}},
		{name: "name stream on", input: "topcdn http://o {\n name_stream on\n}", want: Handler{Origin: "http://o", NameStream: new(true)}},
		{name: "https port", input: "topcdn http://o {\n https_port 8443\n}", want: Handler{Origin: "http://o", HTTPSPort: 8443}},
		{name: "https port not a number", input: "topcdn {\n https_port https\n}", wantErr: true},
		{name: "name stream neither on nor off", input: "topcdn {\n name_stream sometimes\n}", wantErr: true},
		{name: "bad heartbeat", input: "topcdn {\n heartbeat soon\n}", wantErr: true},
		{name: "negative capacity (for Validate to refuse)", input: "topcdn {\n capacity -1\n}", want: Handler{Capacity: -1}},
		{name: "zero heartbeat (the default)", input: "topcdn {\n heartbeat 0\n}", want: Handler{}},
		{name: "capacity not a number", input: "topcdn {\n capacity NaN\n}", wantErr: true},
		{name: "infinite capacity", input: "topcdn {\n capacity Inf\n}", wantErr: true},
		{name: "dnslink without path", input: "topcdn {\n dnslink blog.example.org\n}", wantErr: true},
		{name: "two arguments", input: `topcdn http://a http://b`, wantErr: true},
		{name: "unknown option", input: "topcdn {\n bogus 1\n}", wantErr: true},
		{name: "bad size", input: "topcdn {\n memory_cache lots\n}", wantErr: true},
		{name: "origin without value", input: "topcdn {\n origin\n}", wantErr: true},
		{name: "disk cache with too many args", input: "topcdn {\n disk_cache a 1GiB x\n}", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(h, tc.want) {
				t.Fatalf("got %+v, want %+v", h, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		h  Handler
		ok bool
	}{
		{Handler{Origin: "http://127.0.0.1:8081", Domain: "cdn.test"}, true},
		{Handler{Origin: "", Domain: "cdn.test"}, false},
		{Handler{Origin: "127.0.0.1:8081", Domain: "cdn.test"}, false},
		{Handler{Origin: "ftp://x", Domain: "cdn.test"}, false},
		{Handler{Origin: "http://x", Domain: "cdn.test/x"}, false},
		{Handler{Origin: "http://x", Domain: "cdn.test", MemoryCacheBytes: -1}, false},
		{Handler{Origin: "http://x", Router: "http://r:8053", PublicURL: "http://127.1.0.1:8080"}, true},
		{Handler{Origin: "http://x", Router: "http://r:8053"}, false},                                      // no public URL
		{Handler{Origin: "http://x", Router: "http://r:8053", PublicURL: "http://edge.example:80"}, false}, // no IP to hand out
		{Handler{Origin: "http://x", Router: "http://r:8053", PublicURL: "http://edge.example:80", PublicAddrs: []string{"203.0.113.7"}}, true},
		{Handler{Origin: "http://x", Router: "http://r:8053", PublicURL: "http://e:80", PublicAddrs: []string{"e"}}, false},
		{Handler{Origin: "http://x", Router: "http://r:8053", PublicURL: "http://127.1.0.1", Location: "95,0"}, false},
		{Handler{Origin: "http://x", Router: "r:8053", PublicURL: "http://127.1.0.1"}, false},
		{Handler{Origin: "http://x", Billing: "billing"}, false},
		{Handler{Origin: "http://x", Capacity: -1}, false},
		{Handler{Origin: "http://x", HTTPSPort: 8443}, true},
		{Handler{Origin: "http://x", HTTPSPort: 65536}, false},
		{Handler{Origin: "http://x", HTTPSPort: -1}, false},
		{Handler{Origin: "http://x", Capacity: math.NaN()}, false},
		{Handler{Origin: "http://x", HeartbeatInterval: caddy.Duration(-time.Second)}, false},
		{Handler{Origin: "http://x", BillingEpoch: -1}, false},
		{Handler{Origin: "http://x", OriginID: "12D3"}, false},
		{Handler{Origin: "http://x", OriginID: "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"}, true},
	}
	for _, tc := range tests {
		if err := tc.h.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.h, err, tc.ok)
		}
	}
}
