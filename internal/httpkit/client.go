package httpkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ErrTooLarge marks an answer whose body is over the limit its caller
// set.
var ErrTooLarge = errors.New("answer too large")

// maxErrorBody bounds how much of an error answer's body is kept in a
// ResponseError.
const maxErrorBody = 64 << 10

// maxMessage bounds ResponseError.Message when it is not a JSON error.
const maxMessage = 512

// ResponseError is an answer whose status is not 2xx.
type ResponseError struct {
	// Method and URL are the request's (the URL without its password).
	Method, URL string
	// Status is the answer's status code.
	Status int
	// Body is the start of the answer's body, at most 64 KiB.
	Body []byte
}

// Error names the request and gives the status and Message.
func (e *ResponseError) Error() string {
	s := fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.URL, e.Status, http.StatusText(e.Status))
	if msg := e.Message(); msg != "" {
		s += ": " + msg
	}
	return s
}

// Message returns what the server said: the "error" field of a JSON body
// such as WriteError's, else the body trimmed and cut to 512 bytes.
func (e *ResponseError) Message() string {
	var b errorBody
	if json.Unmarshal(e.Body, &b) == nil && b.Error != "" {
		return b.Error
	}
	s := strings.TrimSpace(string(e.Body))
	if len(s) > maxMessage {
		s = s[:maxMessage] + "…"
	}
	return s
}

// Do sends req with client (nil means http.DefaultClient) and returns the
// body of a 2xx answer, at most limit bytes. Another status is a
// *ResponseError; a longer body is an error matching ErrTooLarge. Errors
// name the request.
func Do(client *http.Client, req *http.Request, limit int64) ([]byte, error) {
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err // a *url.Error, which names the request
	}
	defer resp.Body.Close()
	url := req.URL.Redacted()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, &ResponseError{Method: req.Method, URL: url, Status: resp.StatusCode, Body: body}
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%s %s: %w: %d bytes, over %d", req.Method, url, ErrTooLarge, resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", req.Method, url, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s %s: %w: over %d bytes", req.Method, url, ErrTooLarge, limit)
	}
	return body, nil
}

// DoJSON is Do, then decodes the answer into v; a nil v reads the answer
// and drops it.
func DoJSON(client *http.Client, req *http.Request, limit int64, v any) error {
	body, err := Do(client, req, limit)
	if err != nil || v == nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Redacted(), err)
	}
	return nil
}

// Get is Do for a GET of url.
func Get(ctx context.Context, client *http.Client, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return Do(client, req, limit)
}

// GetJSON is DoJSON for a GET of url: it decodes the JSON answer, at most
// limit bytes, into v.
func GetJSON(ctx context.Context, client *http.Client, url string, limit int64, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return DoJSON(client, req, limit, v)
}

var _ error = (*ResponseError)(nil)
