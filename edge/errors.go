package edge

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/ipfs/boxo/gateway"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/routing"
	"go.uber.org/zap"
)

// upstreamError is a failure to get something from upstream (the origin,
// the storage peers) as a client is told of it: what failed and how,
// never where from; the origin's and the peers' addresses stay in the
// logs. It unwraps to the failure itself, for errors.Is and the logs.
type upstreamError struct {
	msg string
	err error
}

func (e *upstreamError) Error() string { return e.msg }
func (e *upstreamError) Unwrap() error { return e.err }

// clientError maps err, a failure to get what (a block, a name's record)
// from upstream, to the error boxo's gateway answers a client with: the
// status says whose fault it is and the message names no address. This is
// the one place the edge decides those statuses:
//
//   - not found upstream (the origin's 404, a name it does not have): 404;
//   - the origin did not answer in time: 504;
//   - any other failure upstream (unreachable, an error status, a bad
//     block or record): 502, logged with the whole error;
//   - the request's own end (its client left) and errors that already
//     carry a status (errTooMuchWork) are returned as they are.
func clientError(log *zap.Logger, what string, err error) error {
	var coded *gateway.ErrorStatusCode
	switch {
	case err == nil || errors.Is(err, context.Canceled) || errors.As(err, &coded):
		return err
	case ipld.IsNotFound(err):
		return err // the Blockstore contract's own error, which boxo answers 404
	case errors.Is(err, routing.ErrNotFound) || isNotFound(err):
		return gateway.NewErrorStatusCode(&upstreamError{msg: what + ": not found", err: err}, http.StatusNotFound)
	}
	status, how := http.StatusBadGateway, "the origin cannot give it"
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status, how = http.StatusGatewayTimeout, "the origin did not answer in time"
	}
	log.Warn("upstream failed", zap.String("what", what), zap.Int("status", status), zap.Error(err))
	return gateway.NewErrorStatusCode(&upstreamError{msg: what + ": " + how, err: err}, status)
}

// writeError answers a request with err's status (502 unless err carries
// one, as clientError's do) and message.
func writeError(w http.ResponseWriter, err error) {
	status := http.StatusBadGateway
	var coded *gateway.ErrorStatusCode
	if errors.As(err, &coded) {
		status = coded.StatusCode
	}
	http.Error(w, err.Error(), status)
}
