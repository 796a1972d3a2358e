package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/originapi"
)

// PurgeResult is the origin's answer to a purge: the ID of the change
// that carries it on the origin's stream of name changes. An edge whose
// health reports a names_cursor at or past it has dropped the answers.
type PurgeResult struct {
	ID int64 `json:"id"`
}

// Purge asks every edge to drop its cached answers for the human name:
// all of them, or those of paths (absolute paths within the site; one
// ending in "/" covers everything under it). It is signed by key, the key
// the name is bound to; the origin takes each purge once, and limits how
// often a name is purged.
func (c *Client) Purge(ctx context.Context, key *identity.Key, human string, paths []string) (*PurgeResult, error) {
	var out *PurgeResult
	err := c.each(ctx, func(c *Client) (err error) {
		out, err = c.purge(ctx, key, human, paths)
		return err
	})
	return out, err
}

func (c *Client) purge(ctx context.Context, key *identity.Key, human string, paths []string) (*PurgeResult, error) {
	env, err := originapi.SignPurge(key, human, paths)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	body, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/api/v1/names/"+url.PathEscape(human)+"/purge"), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var res PurgeResult
	if err := c.do(req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
