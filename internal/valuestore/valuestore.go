// Package valuestore helps our IPNS record sources satisfy libp2p's
// routing.ValueStore, which boxo's name resolver reads records through.
package valuestore

import (
	"context"

	"github.com/libp2p/go-libp2p/core/routing"
)

// Getter is the half of routing.ValueStore a single-source record store
// implements itself.
type Getter interface {
	GetValue(ctx context.Context, key string, opts ...routing.Option) ([]byte, error)
}

// Search is SearchValue for a store with one answer per key: it sends
// g's record for key, if any, on a closed channel.
func Search(ctx context.Context, g Getter, key string, opts ...routing.Option) (<-chan []byte, error) {
	v, err := g.GetValue(ctx, key, opts...)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 1)
	ch <- v
	close(ch)
	return ch, nil
}
