// Package devnet runs a whole topcdn network on one machine: an origin,
// storage peers, billing, the DNS router, an ACME CA (pebble, with a
// resolver in the devnet's own process forwarding the zone to the router)
// and three edges in three "cities" serving HTTP and HTTPS, each its own
// process on loopback, with a site published. It is what `make demo`
// and `topcdn devnet --dir DIR` run, and what the end-to-end tests drive
// through DIR/devnet.json: the browser test (TestDevnetInChromium, over
// HTTPS), TestDevnetHTTPS (each edge's own certificates, HTTP/2 and 3)
// and the billing test (TestDevnetBilling: honest clients' traffic paid
// in full, and what an admitted insider can add).
package devnet
