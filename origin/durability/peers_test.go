package durability

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/storageapi"
)

func TestHeartbeat(t *testing.T) { pgtest.Dialects(t, testHeartbeat) }

func testHeartbeat(t *testing.T, dsn string) {
	ctx := context.Background()
	kp, _ := newTestKeeper(t, dsn, Config{})
	peerKey, _ := identity.Generate(nil)
	other, _ := identity.Generate(nil)
	now := time.Now()
	kp.now = func() time.Time { return now }
	hb := func(k *identity.Key, mut func(*storageapi.Heartbeat)) *identity.Envelope {
		h := storageapi.Heartbeat{Peer: peerKey.ID.String(), Addr: "http://127.0.0.1:9001", Capacity: 100, Free: 60,
			Shards: 3, Time: now, Location: &storageapi.Location{Lat: 50.1, Lon: 8.7, Region: "eu-fra"}}
		if mut != nil {
			mut(&h)
		}
		env, err := k.Sign(storageapi.TypeHeartbeat, h)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	first := hb(peerKey, nil)
	steps := []struct {
		name string
		env  *identity.Envelope
		want error
	}{
		{"first heartbeat registers", first, nil},
		{"replayed", first, ErrReplayedHeartbeat},
		{"newer", hb(peerKey, func(h *storageapi.Heartbeat) { h.Time = now.Add(time.Second); h.Free = 50 }), nil},
		{"signed by another key", hb(other, nil), ErrBadHeartbeat},
		{"stale", hb(peerKey, func(h *storageapi.Heartbeat) { h.Time = now.Add(-time.Hour) }), ErrBadHeartbeat},
		{"from the future", hb(peerKey, func(h *storageapi.Heartbeat) { h.Time = now.Add(time.Hour) }), ErrBadHeartbeat},
		{"bad address", hb(peerKey, func(h *storageapi.Heartbeat) { h.Addr = "ftp://x"; h.Time = now.Add(2 * time.Second) }), ErrBadHeartbeat},
		{"free over capacity", hb(peerKey, func(h *storageapi.Heartbeat) { h.Free = 1000; h.Time = now.Add(2 * time.Second) }), ErrBadHeartbeat},
		{"wrong type", func() *identity.Envelope {
			e, _ := peerKey.Sign(storageapi.TypeWriteOrder, storageapi.Heartbeat{Peer: peerKey.ID.String(), Time: now})
			return e
		}(), ErrBadHeartbeat},
	}
	for _, st := range steps {
		err := kp.Heartbeat(ctx, st.env)
		if st.want == nil && err != nil || st.want != nil && !errors.Is(err, st.want) {
			t.Fatalf("%s: err = %v, want %v", st.name, err, st.want)
		}
	}
	peers, err := kp.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].ID != peerKey.ID.String() || peers[0].Free != 50 || !peers[0].Healthy ||
		peers[0].Location == nil || peers[0].Location.Region != "eu-fra" {
		t.Fatalf("peers = %+v", peers)
	}
	// Three intervals of silence: unhealthy.
	now = now.Add(3*kp.cfg.HeartbeatInterval + time.Second)
	if peers, _ := kp.Peers(ctx); peers[0].Healthy {
		t.Fatal("silent peer still healthy")
	}
}

func TestPlacementSpreadsAcrossRegions(t *testing.T) {
	pgtest.Dialects(t, testPlacementSpreadsAcrossRegions)
}

func testPlacementSpreadsAcrossRegions(t *testing.T, dsn string) {
	ctx := context.Background()
	kp, _ := newTestKeeper(t, dsn, Config{})
	now := time.Now()
	kp.now = func() time.Time { return now }
	regions := []string{"eu", "eu", "eu", "eu", "us", "us", "ap"}
	byID := map[string]string{}
	for i, r := range regions {
		k, _ := identity.Generate(nil)
		env, _ := k.Sign(storageapi.TypeHeartbeat, storageapi.Heartbeat{Peer: k.ID.String(), Addr: "http://127.0.0.1:1",
			Capacity: 100, Free: int64(10 * (i + 1)), Time: now, Location: &storageapi.Location{Region: r}})
		if err := kp.Heartbeat(ctx, env); err != nil {
			t.Fatal(err)
		}
		byID[k.ID.String()] = r
	}
	got, err := kp.placement(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, p := range got {
		order = append(order, byID[p.String()])
	}
	// Round-robin over regions (sorted), emptiest peer of each first.
	want := []string{"ap", "eu", "us", "eu", "us", "eu", "eu"}
	if len(order) != len(want) {
		t.Fatalf("placement %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("placement regions %v, want %v", order, want)
		}
	}
	// A peer caught lying gets nothing new.
	var liar string
	for id, r := range byID {
		if r == "ap" {
			liar = id
		}
	}
	if _, err := kp.db.ExecContext(ctx, `INSERT INTO flags (peer_id, shard_id, reason, source, at) VALUES (?, 's', 'bad-bytes', 'audit', 0)`, liar); err != nil {
		t.Fatal(err)
	}
	got, err = kp.placement(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range got {
		if p.String() == liar {
			t.Fatal("placement offers a peer caught serving bad bytes")
		}
	}
	if len(got) != len(regions)-1 {
		t.Fatalf("placement has %d peers, want %d", len(got), len(regions)-1)
	}
}
