package web

// The dashboard's API: /ui/api/{path} hands an allowlisted request to the
// server's own API (Config.API) in process, as the signed-in user. The
// session cookie is taken off and a token is minted for that one request:
// sub = the user's subject (so the audit log names the user), scopes = the
// user's role's scopes, 60 s. The API then does its own checks and answers
// with its own JSON errors; the dashboard adds only the role check below
// and never a second implementation of an operation.

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// apiTokenTTL is the lifetime of the token minted for one proxied request.
const apiTokenTTL = 60 * time.Second

// apiRule allows a method on a path (or, with prefix, on everything below
// it) to users with at least role.
type apiRule struct {
	method string
	path   string
	prefix bool // path ends in "/" and matches every path below it
	role   Role
}

// apiRules is the allowlist of /ui/api/. GET rules also allow HEAD.
var apiRules = []apiRule{
	{"GET", "/api/v1/agents", false, RoleViewer},
	{"GET", "/api/v1/jobs", false, RoleViewer},
	{"GET", "/api/v1/jobs/", true, RoleViewer},
	{"GET", "/status", false, RoleViewer},
	{"GET", "/api/v1/connections", false, RoleViewer}, // the Connections page's rows
	{"GET", "/api/v1/revocations", false, RoleViewer},
	// Test matrices (docs/jobs.md): comparing two jobs and reading saved
	// definitions (the API shows each user only their own unless jobs:admin).
	// A matrix job's matrix.json and matrix.csv are results, under /api/v1/jobs/.
	{"GET", "/api/v1/compare", false, RoleViewer},
	{"GET", "/api/v1/definitions", false, RoleViewer},
	{"GET", "/api/v1/definitions/", true, RoleViewer},
	{"POST", "/api/v1/jobs", false, RoleOperator},
	{"POST", "/api/v1/jobs/", true, RoleOperator},
	{"DELETE", "/api/v1/jobs/", true, RoleOperator},
	// Running a definition (…/{name}/jobs, …/{name}/versions/{N}/jobs) is the
	// only POST below it; storing one (PUT) and its schedule are not the
	// dashboard's.
	{"POST", "/api/v1/definitions/", true, RoleOperator},
	{"POST", "/bids/deny", false, RoleOperator},
	{"POST", "/api/v1/revocations", false, RoleOperator},
	{"POST", "/api/v1/tokens", false, RoleOperator},
	// Enrolling and forgetting an agent need jobs:admin in the API, an operator's.
	{"POST", "/api/v1/agents/enrol", false, RoleOperator},
	{"DELETE", "/api/v1/agents/", true, RoleOperator},
	{"POST", "/bids/allow", false, RoleAdmin}, // undoes a denial, as the DELETE below
	{"DELETE", "/api/v1/revocations/", true, RoleAdmin},
	{"GET", "/api/v1/audit", false, RoleAdmin},
}

// matchAPIRule returns the rule allowing method on p (an unescaped, clean
// path), or nil.
func matchAPIRule(method, p string) *apiRule {
	if method == http.MethodHead {
		method = http.MethodGet
	}
	for i := range apiRules {
		rule := &apiRules[i]
		if rule.method != method {
			continue
		}
		if rule.prefix && strings.HasPrefix(p, rule.path) && len(p) > len(rule.path) || !rule.prefix && p == rule.path {
			return rule
		}
	}
	return nil
}

// serveUIAPI serves /ui/api/{path...} (after RequireLogin and Protect).
func (h *Handler) serveUIAPI(w http.ResponseWriter, r *http.Request) {
	s := SessionFrom(r.Context())
	if s == nil {
		apierr.WriteNew(w, http.StatusUnauthorized, "login_required", "sign in first")
		return
	}
	escaped, ok := strings.CutPrefix(r.URL.EscapedPath(), "/ui/api")
	if !ok || !strings.HasPrefix(escaped, "/") {
		notFoundAPI(w)
		return
	}
	target, err := url.Parse(escaped)
	if err != nil || target.Path != path.Clean(target.Path) || strings.Contains(escaped, "//") {
		notFoundAPI(w)
		return
	}
	rule := matchAPIRule(r.Method, target.Path)
	if rule == nil {
		notFoundAPI(w)
		return
	}
	if s.Role < rule.role {
		apierr.WriteNew(w, http.StatusForbidden, "role_forbidden",
			"this needs the "+rule.role.String()+" role; you have the "+s.Role.String()+" role")
		return
	}
	if h.cfg.API == nil {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "api_unavailable", "the server's API is not connected to the dashboard")
		return
	}
	target.RawQuery = r.URL.RawQuery
	r2, e := h.apiRequest(r, s, target)
	if e != nil {
		apierr.Write(w, e)
		return
	}
	h.cfg.API.ServeHTTP(&apiResponseWriter{ResponseWriter: w, h: h}, r2)
}

func notFoundAPI(w http.ResponseWriter) {
	apierr.WriteNew(w, http.StatusNotFound, wire.ErrorNotFound, "no such dashboard API endpoint")
}

// apiRequest returns a copy of r for the API at target (path and query),
// without cookies and with a token for s.
func (h *Handler) apiRequest(r *http.Request, s *Session, target *url.URL) (*http.Request, *apierr.Error) {
	tok, _, err := h.mintToken(s, apiTokenTTL, "", "", s.Role.Scopes())
	if err != nil {
		h.log.Error("web: sign API token", "err", err)
		return nil, apierr.New(http.StatusServiceUnavailable, "sign_failed", "could not sign the request's token")
	}
	r2 := r.Clone(r.Context())
	u := *r.URL
	u.Path, u.RawPath, u.RawQuery = target.Path, target.RawPath, target.RawQuery
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	r2.Header.Del("Cookie")
	r2.Header.Set("Authorization", "Bearer "+tok)
	return r2, nil
}

// mintToken signs a token for the user of s: topic and prefix for relay
// connections ("" for API calls), scopes, ttl from now.
func (h *Handler) mintToken(s *Session, ttl time.Duration, topic, prefix string, scopes []string) (string, time.Time, error) {
	c := auth.NewClaims(h.cfg.PublicURL.String(), h.cfg.Now(), ttl)
	c.Subject, c.Topic, c.Prefix, c.Scopes = s.Subject, topic, prefix, scopes
	tok, err := h.cfg.Key.Sign(c)
	return tok, c.Expiry(), err
}

// apiResponseWriter passes the API's answer on. It points same-origin
// redirects (the jobs API's 303 to a job) back into /ui/api/, so fetch
// follows them with the session, and forbids the browser to run anything
// in a proxied answer (a result file is the agents' content).
type apiResponseWriter struct {
	http.ResponseWriter
	h           *Handler
	wroteHeader bool
}

func (w *apiResponseWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		hd := w.Header()
		if loc := hd.Get("Location"); loc != "" {
			hd.Set("Location", w.h.uiAPILocation(loc))
		}
		hd.Set("Content-Security-Policy", "default-src 'none'; sandbox")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Del("Set-Cookie")
		hd.Del("WWW-Authenticate") // the session signs in here: no browser Basic prompt
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *apiResponseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *apiResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// uiAPILocation rewrites a Location of the API ("https://hub/api/v1/jobs/X"
// or "/api/v1/jobs/X") to the dashboard's ("/ui/api/api/v1/jobs/X");
// other locations are kept.
func (h *Handler) uiAPILocation(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || u.Opaque != "" || u.User != nil {
		return loc
	}
	pub := h.cfg.PublicURL
	if u.Host != "" && (!strings.EqualFold(u.Host, pub.Host) || u.Scheme != pub.Scheme) {
		return loc
	}
	p := u.EscapedPath()
	if u.Host != "" {
		if p = strings.TrimPrefix(p, h.base); !strings.HasPrefix(p, "/") {
			return loc
		}
	}
	if !strings.HasPrefix(p, "/") {
		return loc
	}
	out := h.path("/ui/api" + p)
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out
}
