// Package originapi is the origin's HTTP API as its callers see it: the
// JSON bodies of /api/v1 (names, uploads, publishers, storage status) and
// the signing of upload authorizations.
//
// Publishers, edges, the DNS router, billing and the dashboard import this
// package to speak to an origin; the origin imports it to answer. It links
// none of the origin's stores, so a caller of the API does not carry the
// origin's database, block store or striping.
package originapi
