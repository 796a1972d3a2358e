package originapi

import "time"

// MaxNameHistory is the most moves of a name GET
// /api/v1/names/{name}/history answers: the latest ones.
const MaxNameHistory = 1000

// NameHistory is the answer of GET /api/v1/names/{name}/history: the roots
// a human name pointed at, from the origin's billing log, oldest first (at
// most MaxNameHistory, the latest). A publisher rolls back to one of them.
type NameHistory struct {
	// Name is the human name.
	Name string `json:"name"`
	// Moves are the name's moves, oldest first.
	Moves []NameMove `json:"moves"`
}

// NameMove is one move of a human name to a root: an accepted IPNS record.
type NameMove struct {
	// Root is the root CID the name pointed at.
	Root string `json:"root"`
	// Sequence is the record's sequence number.
	Sequence uint64 `json:"sequence"`
	// IPNS is the IPNS name (k51…) the record was for.
	IPNS string `json:"ipns"`
	// At is when the origin accepted the record.
	At time.Time `json:"at"`
}
