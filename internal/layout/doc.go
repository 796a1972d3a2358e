// Package layout holds no code: its test keeps the dependencies between
// topcdn's packages pointing the way the README's Layout section says, so
// that a volunteer's edge binary never links a database, the origin, the
// DNS server or the ledger.
package layout
