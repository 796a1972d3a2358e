// Package devnet runs a whole topcdn network on one machine: an origin,
// storage peers, billing, the DNS router, an ACME CA (pebble, with a
// resolver in the devnet's own process forwarding the zone to the router
// and serving a publisher's zone, example.test, from a zone file) and
// three edges in three "cities" serving HTTP and HTTPS, each its own
// process on loopback, with two sites published: blog, and notes, also
// served under the custom domain www.example.test. It is what `make demo`
// and `topcdn devnet --dir DIR` run, and what the end-to-end tests drive
// through DIR/devnet.json: the browser test (TestDevnetInChromium, over
// HTTPS, the custom domain too), TestDevnetHTTPS (each edge's own
// certificates, HTTP/2 and 3, on-demand certificates for the custom
// domain and none for bad.example.test or made-up names),
// TestDevnetCertRenewal (short-lived certificates renewed; a custom
// domain removed from its zone gets none) and the billing test
// (TestDevnetBilling: honest clients' traffic paid in full, and what an
// admitted insider can add).
package devnet
