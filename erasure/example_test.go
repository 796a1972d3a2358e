package erasure_test

import (
	"bytes"
	"fmt"

	"github.com/topcdn/topcdn/erasure"
)

// ExampleStriper_Reconstruct loses four of fourteen shards and rebuilds
// them from the other ten.
func ExampleStriper_Reconstruct() {
	s, err := erasure.New(10, 4)
	if err != nil {
		panic(err)
	}
	segment := bytes.Repeat([]byte("content-addressed "), 1000)
	shards, err := s.Encode(segment)
	if err != nil {
		panic(err)
	}
	want := bytes.Clone(shards[3])
	for _, lost := range []int{0, 3, 7, 12} {
		shards[lost] = nil
	}
	if err := s.Reconstruct(shards); err != nil {
		panic(err)
	}
	fmt.Println(len(shards), "shards of", len(shards[0]), "bytes; shard 3 rebuilt:", bytes.Equal(shards[3], want))
	// Output: 14 shards of 1800 bytes; shard 3 rebuilt: true
}
