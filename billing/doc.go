// Package billing will verify edges' signed served-byte receipts and keep
// the token ledger.
//
// Not implemented yet: this package only reserves its place in the layout.
// The work is tracked in issue 7.
package billing
