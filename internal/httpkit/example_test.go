package httpkit_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/topcdn/topcdn/internal/httpkit"
)

// ErrNotFound is a service's sentinel, kept in its API.
var ErrNotFound = errors.New("not found")

func Example() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /names/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := httpkit.Errorf(http.StatusNotFound, "no name %q", r.PathValue("name"))
		err.Kind = ErrNotFound
		httpkit.WriteError(w, err)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var v struct{ IPNS string }
	err := httpkit.GetJSON(context.Background(), srv.Client(), srv.URL+"/names/blog", 64<<10, &v)
	var re *httpkit.ResponseError
	if errors.As(err, &re) {
		fmt.Println(re.Status, re.Message())
	}
	// Output: 404 no name "blog"
}
