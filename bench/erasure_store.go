package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/erasure"
	"github.com/topcdn/topcdn/storageapi"
)

// peerStore is an erasure.ShardStore over real storage peers: orders are
// signed by its client's key (the origin's to write, a reader's to read),
// and a peer's address is looked up in addrs. It counts the reads.
type peerStore struct {
	client *storageapi.Client
	addrs  map[peer.ID]string // read-only once in use

	gets, getBytes, getErrors atomic.Int64
}

var _ erasure.ShardStore = (*peerStore)(nil)

func (s *peerStore) addr(p peer.ID) (string, error) {
	a, ok := s.addrs[p]
	if !ok {
		return "", fmt.Errorf("no address known for peer %s", p)
	}
	return a, nil
}

// PutShard implements erasure.ShardStore.
func (s *peerStore) PutShard(ctx context.Context, p peer.ID, shard string, data []byte) error {
	a, err := s.addr(p)
	if err != nil {
		return err
	}
	return s.client.Put(ctx, p, a, shard, data)
}

// GetShard implements erasure.ShardStore.
func (s *peerStore) GetShard(ctx context.Context, p peer.ID, shard string, off, length int64) ([]byte, error) {
	s.gets.Add(1)
	s.getBytes.Add(length)
	a, err := s.addr(p)
	if err == nil {
		var data []byte
		if data, err = s.client.GetRange(ctx, p, a, shard, off, length); err == nil {
			return data, nil
		}
	}
	s.getErrors.Add(1)
	return nil, err
}

// summary describes the reads made through s for the progress line.
func (s *peerStore) summary(input int64) string {
	return fmt.Sprintf("  (%d shard reads, %.2fx the input's bytes, %d failed)",
		s.gets.Load(), float64(s.getBytes.Load())/float64(input), s.getErrors.Load())
}

// resolvePeers asks each storage peer at urls for its peer ID (GET
// /status) and returns the IDs in the order of urls and the address of
// each. Two URLs answering with the same ID are an error.
func resolvePeers(ctx context.Context, c *storageapi.Client, urls []string) ([]peer.ID, map[peer.ID]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ids := make([]peer.ID, len(urls))
	addrs := make(map[peer.ID]string, len(urls))
	for i, u := range urls {
		st, err := c.Status(ctx, u)
		if err != nil {
			return nil, nil, err
		}
		id, err := peer.Decode(st.PeerID)
		if err != nil {
			return nil, nil, fmt.Errorf("status of %s: peer_id %q: %w", u, st.PeerID, err)
		}
		if prev, dup := addrs[id]; dup {
			return nil, nil, fmt.Errorf("peers at %s and %s both say they are %s", prev, u, id)
		}
		ids[i], addrs[id] = id, u
	}
	return ids, addrs, nil
}
