package storage

import (
	"errors"
	"net/http"

	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/storageapi"
)

// errMethodNotAllowed marks a HEAD of a shard, which would spend a read
// order for nothing.
var errMethodNotAllowed = errors.New("method not allowed")

// errorf builds an error of the given kind (a storageapi sentinel, or
// errMethodNotAllowed) with a message for the client, answered with the
// kind's status. A %w verb in format wraps its argument.
func errorf(kind error, format string, args ...any) error {
	return reject("", kind, format, args...)
}

// reject is errorf for a refused order, counted under reason in
// topcdn_storage_orders_rejected_total (see Server.fail); an empty reason
// is not counted.
func reject(reason string, kind error, format string, args ...any) error {
	err := httpkit.Errorf(kindStatus(kind), format, args...)
	err.Kind, err.Reason = kind, reason
	return err
}

// kindStatus is the status an error of kind is answered with.
func kindStatus(kind error) int {
	if kind == errMethodNotAllowed {
		return http.StatusMethodNotAllowed
	}
	if status := storageapi.KindStatus(kind); status != 0 {
		return status
	}
	return http.StatusInternalServerError
}

// Reasons an order is refused, the label values of
// topcdn_storage_orders_rejected_total.
const (
	reasonMissing   = "missing"   // no order header, or an empty one
	reasonMalformed = "malformed" // not a decodable envelope or body
	reasonSignature = "signature" // bad signature or wrong envelope type
	reasonSigner    = "signer"    // signed by a key that may not sign it
	reasonPeer      = "peer"      // for another peer
	reasonShard     = "shard"     // for another shard
	reasonExpired   = "expired"   // expired or valid too long
	reasonRange     = "range"     // range differs from the request's
	reasonSize      = "size"      // size differs from the upload's
	reasonReplay    = "replay"    // read order already served
)
