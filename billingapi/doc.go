// Package billingapi is billing's wire formats and its clients, for the
// parties that report to billing and read from it.
//
// Edges report the responses they serve with a Reporter: one signed Batch
// of Records per epoch, with a Merkle root over them. Storage peers claim
// the read orders they served with ClaimOnce or RunClaimer. Operators and
// tools use Client for deposits, balances, statements and settlement. The
// JSON answers of billing's HTTP API (Account, Statement, BatchResult …),
// the Reason codes of refusals and RejectError, the error that carries
// one, are declared here once. A batch's answer lists the records
// refused (BatchResult.Rejected) and those whose content billing could
// not resolve yet (BatchResult.Deferred: resolved at settlement, nothing
// to resend); a Reporter treats any 2xx as final.
//
// The ledger that verifies and pays is package billing; this package links
// none of it, so an edge or a storage peer carries no SQL driver.
package billingapi
