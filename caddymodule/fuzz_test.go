package caddymodule

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary text to the topcdn directive.
// Whatever it is, parsing and validating return (an error or a config)
// without panicking, Validate refuses negative sizes and durations, and a
// config that parses survives the JSON round
// trip Caddy puts it through (Caddyfile → JSON → module) unchanged, so
// what an operator wrote is what the edge runs with.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, s := range []string{
		"topcdn http://127.0.0.1:8081",
		"topcdn {\n origin http://o:8081\n domain cdn.example\n memory_cache 64MiB\n disk_cache /c 2GiB\n key /k\n}",
		"topcdn http://o {\n router http://127.0.0.1:8053\n public_url http://127.1.0.1:8080\n public_addr 127.1.0.1 ::1\n" +
			" city \"São Paulo\"\n location -23.55,-46.63\n capacity 5000\n heartbeat 2s\n billing http://b\n billing_epoch 1m\n}",
		"topcdn http://o {\n dnslink blog.example.org /ipfs/bafkqaaa\n}",
		"topcdn {\n memory_cache 1e30\n}",
		"topcdn {\n location 91,181\n}",
		"topcdn {\n heartbeat -1s\n}",
		"topcdn {\n{\n}",
		"topcdn {\n capacity NaN\n}", // NaN passed `n < 0` and then broke Caddy's JSON
		"topcdn {\n capacity +Inf\n}",
		"topcdn http://o {\n resolvers 127.0.0.1:5301 ::1\n https_port 8443\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		if h.Validate() == nil && (h.MemoryCacheBytes < 0 || h.DiskCacheBytes < 0 || h.Capacity < 0 ||
			h.HeartbeatInterval < 0 || h.BillingEpoch < 0) {
			t.Fatalf("%q: Validate passed negative values: %+v", input, h)
		}
		raw, err := json.Marshal(&h)
		if err != nil {
			t.Fatalf("%q: marshal: %v", input, err)
		}
		var back Handler
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("%q: unmarshal %s: %v", input, raw, err)
		}
		if !reflect.DeepEqual(normalize(h), normalize(back)) {
			t.Fatalf("%q: JSON round trip changed the config:\n%+v\n%+v", input, h, back)
		}
	})
}

// normalize makes empty and nil collections compare equal: JSON's
// omitempty drops both.
func normalize(h Handler) Handler {
	if len(h.PublicAddrs) == 0 {
		h.PublicAddrs = nil
	}
	if len(h.DNSLinks) == 0 {
		h.DNSLinks = nil
	}
	return h
}

// FuzzConnLimitCaddyfile feeds arbitrary text to the topcdn_limit
// listener wrapper: parsing returns an error or caps of 1 or more, which
// Validate accepts, without panicking.
func FuzzConnLimitCaddyfile(f *testing.F) {
	for _, s := range []string{
		"topcdn_limit",
		"topcdn_limit {\n per_address 8\n total 1000\n}",
		"topcdn_limit {\n per_address -1\n}",
		"topcdn_limit {\n total 99999999999999999999\n}",
		"topcdn_limit {\n{\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var l ConnLimit
		if err := l.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		if l.PerAddress < 0 || l.Total < 0 || l.Validate() != nil {
			t.Fatalf("%q: parsed to caps Validate refuses: %+v", input, l)
		}
	})
}
