package agent

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/apierr"
)

// Local listeners (http-push, status) have no authentication: whoever can
// reach them may use them. That is meant for programs on this host (ffmpeg,
// curl, a local websocket client, Prometheus), never for a web page that a
// browser on this host happens to show: such a page can POST to
// http://127.0.0.1:8888/ts/video0 without any preflight ("simple" request)
// and would inject data into the topic and cut off the real push.
//
// A browser marks every request it sends for a page: Sec-Fetch-Site
// (modern browsers), and Origin on everything but same-origin GET and
// HEAD. Programs such as ffmpeg and curl send neither. So a request is
// refused when:
//   - it has an Origin other than this listener's own: http://IP:PORT of
//     the address it arrived on, or http://localhost:PORT on a loopback
//     listener (websocket clients such as Python's websocket-client send
//     the URL's own origin);
//   - it has a Sec-Fetch-Site other than "none" (typed in the address bar)
//     or "same-origin";
//   - on a loopback listener, its Host names neither an IP address nor
//     localhost: a page whose DNS name was rebound to 127.0.0.1 reaches
//     the listener "same-origin", with its own name in Host.

// crossOriginCode is the error code of a refused browser request; the same
// as the dashboard's for the same refusal.
const crossOriginCode = "cross_origin_forbidden"

// localOnly wraps the handler of a local listener: requests that a
// browser sends for a page of another origin are answered 403 with a JSON
// error and never reach next.
func localOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reason := foreignBrowserRequest(r); reason != "" {
			apierr.WriteNew(w, http.StatusForbidden, crossOriginCode, reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// foreignBrowserRequest says why r comes from a browser page that is not
// this listener's own, or returns "".
func foreignBrowserRequest(r *http.Request) string {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if origins, ok := r.Header["Origin"]; ok {
		if len(origins) != 1 || !ownOrigin(local, origins[0]) {
			return "a request from a web page of another origin is refused: this local listener is for programs on this host"
		}
	}
	if sites, ok := r.Header["Sec-Fetch-Site"]; ok {
		if len(sites) != 1 || sites[0] != "none" && sites[0] != "same-origin" {
			return "a cross-site request from a browser is refused: this local listener is for programs on this host"
		}
	}
	if local != nil && local.IP.IsLoopback() && r.Host != "" && !loopbackHost(r.Host) {
		return "Host " + strconv.Quote(r.Host) + " is not an address of this loopback listener (use 127.0.0.1, [::1] or localhost)"
	}
	return ""
}

// ownOrigin reports whether origin is the listener's own: http:// and the
// address the request arrived on, or localhost and its port on a loopback
// listener. Without a known address, no origin is its own.
func ownOrigin(local *net.TCPAddr, origin string) bool {
	if local == nil {
		return false
	}
	if origin == "http://"+local.String() {
		return true
	}
	return local.IP.IsLoopback() && origin == "http://localhost:"+strconv.Itoa(local.Port)
}

// loopbackHost reports whether a Host header names a loopback listener by
// an IP address or as localhost: never by a DNS name, which a page can
// point at 127.0.0.1.
func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]") // no port
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
