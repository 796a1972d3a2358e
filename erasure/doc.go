// Package erasure will Reed-Solomon stripe published content across
// volunteer storage peers (github.com/klauspost/reedsolomon), so any k of n
// shards rebuild a segment, and will read, verify, audit and repair those
// shards.
//
// Not implemented yet: this package only reserves its place in the layout.
// The work is tracked in issue 4.
package erasure
