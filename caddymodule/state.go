package caddymodule

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2"
	"github.com/topcdn/topcdn/edge"
)

// states shares one edge.State among the handlers of every loaded config
// that serve the same content the same way, so that a config reload keeps
// the memory caches warm, and what the edge learnt of names, manifests
// and storage peers (which it needs to ride out an origin outage).
var states = caddy.NewUsagePool()

// sharedState is a pooled edge.State; nothing to release but memory.
type sharedState struct{ *edge.State }

// Destruct lets the State go.
func (sharedState) Destruct() error { return nil }

// stateKey is what a State's contents depend on: handlers that differ in
// any of it must not share one.
type stateKey struct {
	Origin      string            `json:"origin"`
	Origins     []string          `json:"origins"`
	OriginID    string            `json:"origin_id"`
	OriginIDs   []string          `json:"origin_ids"`
	Domain      string            `json:"domain"`
	KeyFile     string            `json:"key_file"` // loaded manifests' readers sign read orders with the key
	DNSLinks    map[string]string `json:"dnslinks"` // encoding/json sorts map keys
	MemoryBytes int64             `json:"memory_bytes"`
}

// loadState returns the State for handlers configured as k, and the key
// releaseState takes.
func loadState(k stateKey) (*edge.State, string, error) {
	b, err := json.Marshal(k)
	if err != nil {
		return nil, "", err
	}
	key := string(b)
	v, _, err := states.LoadOrNew(key, func() (caddy.Destructor, error) {
		return sharedState{edge.NewState(k.MemoryBytes)}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return v.(sharedState).State, key, nil
}

// releaseState lets go of a handler's use of the State at key.
func releaseState(key string) error {
	_, err := states.Delete(key)
	return err
}
