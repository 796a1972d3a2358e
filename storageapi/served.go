package storageapi

// ServedRead is one read order the peer served, as it keeps it: the
// reader's signed envelope exactly as received, the proof of the bytes.
type ServedRead struct {
	// ID is the row's ID; IDs increase in the order reads were served.
	ID int64
	// Reader is the order's signer.
	Reader string
	// Serial is the order's serial.
	Serial string
	// Length is the bytes served.
	Length int64
	// Envelope is the order as received (OrderHeader encoding).
	Envelope string
}
