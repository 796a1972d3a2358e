// Package devnet runs a whole topcdn network on one machine: an origin,
// storage peers, billing, the DNS router and three edges in three
// "cities", each its own process on loopback, with a site published. It
// is what `make demo` and `topcdn devnet --dir DIR` run, and what the
// end-to-end browser test drives through DIR/devnet.json.
package devnet
