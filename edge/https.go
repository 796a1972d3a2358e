package edge

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// withHTTPS tells the gateway which scheme a request came over, and
// sends plain-HTTP requests for names to HTTPS when the edge serves it.
//
// boxo's gateway builds its redirects (subdomain gateway, DNSLink
// inlining) as https:// only when X-Forwarded-Proto says so; Caddy
// terminates TLS and sets no such header. So a TLS request gets
// "X-Forwarded-Proto: https" and a plain one loses whatever the client
// sent, which therefore cannot make the edge answer http:// requests
// with https:// links or the reverse.
//
// With Config.HTTPSPort set, a plain-HTTP request is answered 308 with
// the same URL on HTTPS, except for HealthPath, a host that is an IP
// address and Config.PublicHost: the router's health and content probes
// and billing's prober reach the edge there over plain HTTP, by address.
// It is outside the accounting: a redirect is neither counted nor billed.
func (e *Edge) withHTTPS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			r.Header.Set("X-Forwarded-Proto", "https")
			next.ServeHTTP(w, r)
			return
		}
		r.Header.Del("X-Forwarded-Proto")
		if target, ok := e.httpsURL(r); ok {
			http.Redirect(w, r, target, http.StatusPermanentRedirect)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// httpsURL returns the URL a plain-HTTP request is redirected to, and
// whether it is.
func (e *Edge) httpsURL(r *http.Request) (string, bool) {
	if e.cfg.HTTPSPort == 0 || r.URL.Path == HealthPath {
		return "", false
	}
	host := strings.TrimSuffix(strings.ToLower(hostOnly(requestHost(r))), ".")
	if host == "" || host == e.cfg.PublicHost || isIPLiteral(host) {
		return "", false
	}
	if e.cfg.HTTPSPort != 443 {
		host += ":" + strconv.Itoa(e.cfg.HTTPSPort)
	}
	return "https://" + host + r.URL.RequestURI(), true
}

// isIPLiteral reports whether host (without its port) is an IP address,
// IPv6 in brackets or not.
func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil
}
