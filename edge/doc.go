// Package edge will be the Caddy-independent edge cache: it will resolve
// names, fetch blocks from storage peers, verify each against its CID, cache
// them in memory and on disk, and serve browsers.
//
// Not implemented yet: this package only reserves its place in the layout.
// The work is tracked in issue 5.
package edge
