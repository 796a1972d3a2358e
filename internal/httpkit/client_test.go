package httpkit

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGetJSON(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]int{"shards": 3})
	})
	mux.HandleFunc("GET /refused", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, Errorf(http.StatusNotFound, "no such name"))
	})
	mux.HandleFunc("GET /text", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, strings.Repeat("x", 1000), http.StatusBadGateway)
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, strings.Repeat("x", 100))
	})
	mux.HandleFunc("GET /big-chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`"`))
		http.NewResponseController(w).Flush() // no Content-Length
		w.Write([]byte(strings.Repeat("x", 100) + `"`))
	})
	mux.HandleFunc("GET /bad-json", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"shards":`))
	})
	mux.HandleFunc("GET /no-content", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name       string
		path       string
		status     int    // of a *ResponseError, or 0
		message    string // its Message
		tooLarge   bool
		errContain string
		shards     int
	}{
		{name: "ok", path: "/ok", shards: 3},
		{name: "JSON error answer", path: "/refused", status: 404, message: "no such name",
			errContain: "GET " + srv.URL + "/refused: HTTP 404 Not Found: no such name"},
		{name: "text error answer", path: "/text", status: 502, message: strings.Repeat("x", 512) + "…"},
		{name: "over the limit", path: "/big", tooLarge: true, errContain: "over 64"},
		{name: "over the limit, chunked", path: "/big-chunked", tooLarge: true, errContain: "over 64 bytes"},
		{name: "malformed", path: "/bad-json", errContain: "GET " + srv.URL + "/bad-json: decode answer"},
		{name: "empty", path: "/no-content", errContain: "decode answer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v struct{ Shards int }
			err := GetJSON(context.Background(), srv.Client(), srv.URL+tc.path, 64, &v)
			var re *ResponseError
			switch {
			case tc.status != 0:
				if !errors.As(err, &re) || re.Status != tc.status || re.Message() != tc.message {
					t.Fatalf("err = %v, want a ResponseError %d %q", err, tc.status, tc.message)
				}
			case errors.As(err, &re):
				t.Fatalf("err = %v: a ResponseError for a 2xx answer", err)
			}
			if errors.Is(err, ErrTooLarge) != tc.tooLarge {
				t.Errorf("errors.Is(%v, ErrTooLarge) = %v, want %v", err, !tc.tooLarge, tc.tooLarge)
			}
			if tc.errContain != "" && (err == nil || !strings.Contains(err.Error(), tc.errContain)) {
				t.Errorf("err = %v, want it to say %q", err, tc.errContain)
			}
			if tc.errContain == "" && tc.status == 0 && !tc.tooLarge && err != nil {
				t.Fatalf("err = %v", err)
			}
			if v.Shards != tc.shards {
				t.Errorf("decoded shards %d, want %d", v.Shards, tc.shards)
			}
		})
	}
}

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "exactly10!")
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name  string
		limit int64
		ok    bool
	}{
		{"at the limit", 10, true},
		{"one over", 9, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := Get(context.Background(), nil, srv.URL, tc.limit)
			if tc.ok != (err == nil) || tc.ok && string(body) != "exactly10!" {
				t.Errorf("Get with limit %d = %q, %v", tc.limit, body, err)
			}
		})
	}
}

func TestDoJSONPost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			WriteError(w, Errorf(http.StatusMethodNotAllowed, "POST only"))
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"a"}`)
	}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
	var out struct{ ID string }
	if err := DoJSON(srv.Client(), req, 1<<10, &out); err != nil || out.ID != "a" {
		t.Fatalf("DoJSON = %v, %+v", err, out)
	}
	req, _ = http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
	if err := DoJSON(srv.Client(), req, 1<<10, nil); err != nil {
		t.Fatalf("DoJSON into nil = %v", err)
	}
	req, _ = http.NewRequest(http.MethodPut, srv.URL, nil)
	var re *ResponseError
	if err := DoJSON(srv.Client(), req, 1<<10, &out); !errors.As(err, &re) || re.Method != "PUT" || re.Status != 405 {
		t.Fatalf("DoJSON PUT = %v, want a ResponseError PUT 405", err)
	}
}

func TestGetCanceled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Get(ctx, srv.Client(), srv.URL, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a canceled context = %v, want context.Canceled", err)
	}
}
