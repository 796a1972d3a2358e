package origin

import (
	"context"
	"net/http"

	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/origin/origindb"
	"github.com/topcdn/topcdn/originapi"
)

// NameHistory returns the roots the human name pointed at, oldest first
// (the latest originapi.MaxNameHistory moves), for a publisher to roll
// back to one of them. A name never published is ErrNotFound.
func (o *Origin) NameHistory(ctx context.Context, human string) (*originapi.NameHistory, error) {
	if err := originapi.ValidateName(human); err != nil {
		return nil, errorf(ErrBadRequest, "%v", err)
	}
	moves, err := origindb.NameHistory(ctx, o.db, human, originapi.MaxNameHistory)
	if err != nil {
		return nil, err
	}
	if len(moves) == 0 {
		return nil, errorf(ErrNotFound, "name %q is not published", human)
	}
	return &originapi.NameHistory{Name: human, Moves: moves}, nil
}

func (o *Origin) serveNameHistory(w http.ResponseWriter, r *http.Request) {
	h, err := o.NameHistory(r.Context(), r.PathValue("name"))
	if err != nil {
		o.fail(w, err)
		return
	}
	httpkit.WriteJSON(w, http.StatusOK, h)
}
