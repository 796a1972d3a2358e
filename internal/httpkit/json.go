package httpkit

import (
	"context"
	"encoding/json"
	"net/http"
)

// errorBody is the JSON body of an error answer: {"error": "..."}, the
// shape of originapi.ErrorResponse and storageapi.ErrorResponse.
type errorBody struct {
	Error string `json:"error"`
}

// WriteJSON answers with status and v as indented JSON, typed
// application/json and marked nosniff. An error encoding v is not
// reported: the status is already sent.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError answers with err's status (StatusOf) and {"error": message}.
// The message of a 500 is "internal error: " and err's text; any other is
// err's text. Within Metrics.Instrument, err is also what the refused
// request is logged with.
func WriteError(w http.ResponseWriter, err error) {
	noteError(w, err)
	status := StatusOf(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal error: " + msg
	}
	WriteJSON(w, status, errorBody{Error: msg})
}

// Health answers a health check (GET /healthz): fields as JSON, with
// "status": "ok", when ping (the service's database, say) succeeds, and
// ping's error through WriteError when it does not.
func Health(ping func(context.Context) error, fields map[string]string) http.HandlerFunc {
	body := map[string]string{"status": "ok"}
	for k, v := range fields {
		body[k] = v
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if err := ping(r.Context()); err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, body)
	}
}
