package storageapi

import (
	"fmt"
	"net/url"
	"strings"
)

// ParseBaseURL checks that s is an http(s) base URL and returns it without
// a trailing slash.
func ParseBaseURL(s string) (string, error) {
	s = strings.TrimSuffix(s, "/")
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q: want http(s)://host[:port][/path]", s)
	}
	return s, nil
}
