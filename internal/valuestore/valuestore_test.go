package valuestore

import (
	"context"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/routing"
)

type getter map[string][]byte

func (g getter) GetValue(_ context.Context, key string, _ ...routing.Option) ([]byte, error) {
	if v, ok := g[key]; ok {
		return v, nil
	}
	return nil, routing.ErrNotFound
}

// TestSearch: the one record is sent, then the channel closes; a missing
// record is GetValue's error.
func TestSearch(t *testing.T) {
	g := getter{"/ipns/a": []byte("rec")}
	ch, err := Search(context.Background(), g, "/ipns/a")
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for v := range ch {
		got = append(got, v)
	}
	if len(got) != 1 || string(got[0]) != "rec" {
		t.Fatalf("got %q", got)
	}
	if _, err := Search(context.Background(), g, "/ipns/b"); !errors.Is(err, routing.ErrNotFound) {
		t.Fatalf("missing record: %v", err)
	}
}
