package billingapi

import "time"

// Account is one ledger account.
type Account struct {
	// ID is the party's peer ID, or TreasuryAccount.
	ID string `json:"id"`
	// Kind is publisher, edge, storage or treasury.
	Kind string `json:"kind"`
	// Balance is in the token's smallest unit.
	Balance int64 `json:"balance"`
	// OutOfFundsSince is when a publisher's balance went below zero.
	OutOfFundsSince *time.Time `json:"out_of_funds_since,omitempty"`
	// Payer is, for a publisher key linked to an account (KeyLink), the
	// account that pays for it: its funds are what count for the key. The
	// link may start with the next epoch; settled epochs keep their payer.
	Payer string `json:"payer,omitempty"`
}

// Entry is one ledger entry of an account.
type Entry struct {
	// Tx is the transaction: deposit:NONCE or settle:EPOCH.
	Tx string `json:"tx"`
	// Epoch is the epoch settled (or of the deposit).
	Epoch int64 `json:"epoch"`
	// Kind is deposit, served, storage_read or stored.
	Kind string `json:"kind"`
	// Amount is credited (positive) or debited (negative), smallest unit.
	Amount int64 `json:"amount"`
	// Bytes is what was priced: bytes served, or shard bytes held.
	Bytes int64 `json:"bytes"`
	// Memo says who served what for whom.
	Memo string `json:"memo"`
}

// Rejected is one refusal shown in a statement.
type Rejected struct {
	// Epoch is the epoch of the refused claim.
	Epoch int64 `json:"epoch"`
	// Kind is batch, record, claim, order or epoch (a forfeit).
	Kind string `json:"kind"`
	// Ref names it: a batch's sequence, a record's serial, an order's row ID.
	Ref string `json:"ref"`
	// Reason is why it was refused.
	Reason Reason `json:"reason"`
	// Detail says more, for people.
	Detail string `json:"detail"`
	// Bytes is what it claimed, where known.
	Bytes int64 `json:"bytes"`
	// At is when billing refused it.
	At time.Time `json:"at"`
}

// Statement is an account's balance, every entry that made it, and every
// claim of the account that billing refused. Entries are exactly what
// settlement paid.
type Statement struct {
	Account  string     `json:"account"`
	Kind     string     `json:"kind"`
	Balance  int64      `json:"balance"`
	Entries  []Entry    `json:"entries"`
	Rejected []Rejected `json:"rejected"`
	// Deferred lists an edge's records settlement holds until read orders
	// of the edge back them (not paid, not refused yet).
	Deferred []Deferred `json:"deferred"`
	// Pending lists an edge's records whose content billing could not
	// resolve yet (BatchResult.Deferred): not paid, not refused yet.
	Pending []PendingRecord `json:"pending"`
	// OutOfFundsSince is set for a publisher whose balance is below zero.
	OutOfFundsSince *time.Time `json:"out_of_funds_since,omitempty"`
	// DNSCheck says whether billing reads the DNS router's evidence (the
	// demand it sent each edge, their epoch byte counters), without which
	// no edge is paid.
	DNSCheck string `json:"dns_check"`
}

// PublisherServed is what the edges were paid to serve for one publisher:
// accepted records only.
type PublisherServed struct {
	Publisher string `json:"publisher"`
	Records   int64  `json:"records"`
	Bytes     int64  `json:"bytes"`
}

// ForfeitInfo is an edge's forfeited epoch, as GET /api/v1/forfeits lists
// it.
type ForfeitInfo struct {
	// Edge is the edge's peer ID.
	Edge string `json:"edge"`
	// Epoch is the forfeited epoch (its start, Unix seconds).
	Epoch int64 `json:"epoch"`
	// Reason is why: wrong_content when the prober caught the edge
	// serving bytes that do not match their CID.
	Reason Reason `json:"reason"`
	// At is when billing decided.
	At time.Time `json:"at"`
}

// Deferred is an edge's records that settlement holds: no read order of
// the edge backs them yet (see ReasonNoUpstreamReads).
type Deferred struct {
	// Epoch is the records' epoch.
	Epoch int64 `json:"epoch"`
	// Publisher and Root name the striped content.
	Publisher string `json:"publisher"`
	Root      string `json:"root"`
	// Records and Bytes are what is held.
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
	// Since is when settlement held them; they are refused BackingWait
	// later unless backed by then.
	Since time.Time `json:"since"`
}

// PendingRecord is an edge's record whose content billing could not
// resolve when the batch came (the origin answered 5xx, timed out or
// served a CAR cut short). Every settlement resolves it again: resolved,
// it is paid as an accepted record of its epoch would have been (or
// refused for what it claims); still unresolved BackingWait after Since,
// it is refused as unindexable.
type PendingRecord struct {
	// Epoch is the record's epoch.
	Epoch int64 `json:"epoch"`
	// Serial is the record's serial.
	Serial uint64 `json:"serial"`
	// Name, Root and CID are what the record served.
	Name string `json:"name,omitempty"`
	Root string `json:"root,omitempty"`
	CID  string `json:"cid"`
	// Bytes is what the record claims.
	Bytes int64 `json:"bytes"`
	// Since is when billing deferred it.
	Since time.Time `json:"since"`
}

// ErrorResponse is the JSON body of every error answer.
type ErrorResponse struct {
	Error  string `json:"error"`
	Reason Reason `json:"reason,omitempty"`
}

// SuspendedResponse is the answer of GET /api/v1/suspended.
type SuspendedResponse struct {
	Publishers []string `json:"publishers"`
}

// ForfeitsResponse is the answer of GET /api/v1/forfeits.
type ForfeitsResponse struct {
	Forfeits []ForfeitInfo `json:"forfeits"`
}

// DefaultForfeitsWindow is how far back GET /api/v1/forfeits looks when the
// request does not say (since).
const DefaultForfeitsWindow = 24 * time.Hour

// BatchResult is billing's answer to a batch.
type BatchResult struct {
	// Accepted counts the records credited.
	Accepted int `json:"accepted"`
	// Bytes is the bytes of the accepted records.
	Bytes int64 `json:"bytes"`
	// Rejected lists the records refused, with reasons.
	Rejected []RecordRejection `json:"rejected"`
	// Duplicate is true when this exact batch had been accepted before;
	// nothing more is credited.
	Duplicate bool `json:"duplicate,omitempty"`
	// Deferred lists the serials of records billing could not resolve
	// the content of now (the origin answered 5xx, timed out or served a
	// CAR cut short): neither credited nor refused, they are resolved
	// again at settlement and then paid, or refused (as unindexable once
	// they stay unresolved for the backing wait). Their serials are taken.
	// There is nothing to send again: a Reporter ignores it. Absent from
	// the answer to a duplicate batch.
	Deferred []uint64 `json:"deferred,omitempty"`
}

// RecordRejection is one refused record.
type RecordRejection struct {
	Serial uint64 `json:"serial"`
	Reason Reason `json:"reason"`
	Detail string `json:"detail"`
}

// SettleResult is what Settle did.
type SettleResult struct {
	// Epochs are the epochs settled by this call.
	Epochs []int64 `json:"epochs"`
	// Paid is the total credited to operators by this call.
	Paid int64 `json:"paid"`
}

// AdmittedPath is where billing lists the edges admitted now
// (AdmittedResponse); the DNS router hands out only those.
const AdmittedPath = "/api/v1/admissions"

// AdmittedEdge is an edge's admission.
type AdmittedEdge struct {
	// Edge is the edge's peer ID.
	Edge string `json:"edge"`
	// Since is when it was admitted.
	Since time.Time `json:"since"`
	// Revoked is when its admission was revoked; absent while admitted.
	Revoked *time.Time `json:"revoked,omitempty"`
}

// AdmittedResponse is the answer of GET AdmittedPath.
type AdmittedResponse struct {
	Edges []AdmittedEdge `json:"edges"`
}
