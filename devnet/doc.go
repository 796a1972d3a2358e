// Package devnet runs a whole topcdn network on one machine: an origin,
// storage peers, billing, the DNS router and three edges in three
// "cities", each its own process on loopback, with a site published. It
// is what `make demo` and `topcdn devnet --dir DIR` run, and what the
// end-to-end tests drive through DIR/devnet.json: the browser test
// (TestDevnetInChromium) and the billing test (TestDevnetBilling: honest
// clients' traffic paid in full, and what an admitted insider can add).
package devnet
