package web

// The dashboard's pages: routes, templates, the data each page is rendered
// with, and the headers every page gets. The pages are thin: each renders
// its frame on the server (with what the server knows at once, such as the
// Overview's counters) and a JavaScript module (static/js/pages/…) fills in
// the rest from /ui/api/ and keeps it live through the relay (live.go).

import (
	"bytes"
	"cmp"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

//go:embed templates/layout.html templates/overview.html templates/connections.html templates/agents.html
//go:embed templates/jobs.html templates/job.html templates/revocations.html templates/tokens.html templates/audit.html
//go:embed templates/definitions.html
var pageTemplateFiles embed.FS

// pageCSP returns the Content-Security-Policy of every page of the server
// at public (its public URL): scripts, styles and images from our own origin
// only (no inline script or style), and fetches and websockets to this
// server only: the page's own origin ('self'), the public URL's origin, and
// that origin's websocket equivalent (ws: for http, wss: for https), where
// the access flow's websocket URIs point. A host that a CSP source cannot
// name (an IPv6 literal) is left to 'self'.
func pageCSP(public *url.URL) string {
	connect := "'self'"
	if cspHost.MatchString(public.Host) {
		ws := "ws"
		if public.Scheme == "https" {
			ws = "wss"
		}
		connect += " " + public.Scheme + "://" + public.Host + " " + ws + "://" + public.Host
	}
	return "default-src 'self'; connect-src " + connect + "; img-src 'self' data:; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// cspHost matches the hosts (with an optional port) a CSP host-source can
// name: DNS names and IPv4 addresses.
var cspHost = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$`)

// pageNames are the templates of the pages, each executed with the layout.
var pageNames = []string{"overview", "connections", "agents", "jobs", "job", "definitions", "revocations", "tokens", "audit"}

// pageTemplates parses the page templates once: layout.html plus the page.
var pageTemplates = sync.OnceValues(func() (map[string]*template.Template, error) {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(pageFuncs).ParseFS(pageTemplateFiles,
			"templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: page template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
})

// jobPhases are the phases the job list filters by (HELD, SUSPENDED and
// UNKNOWN are never entered; docs/jobs.md).
var jobPhases = []string{"PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "ARCHIVED"}

var pageFuncs = template.FuncMap{
	"phases": func() []string { return jobPhases },
	"bytes":  formatBytes,
	"count":  formatCount,
}

// registerPages adds the pages, their static files, the dashboard API
// (/ui/api/…) and the redirect from / to mux. Pages need a session
// (RequireLogin), Tokens the operator role and Audit the admin role
// (RequireRole); the dashboard API checks each request's role itself
// (apiRules) and is behind Protect.
func (h *Handler) registerPages(mux *http.ServeMux) {
	page := func(name string, min Role) http.Handler {
		var hd http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.servePage(w, r, name) })
		if min > RoleViewer {
			return h.RequireRole(min, hd)
		}
		return h.RequireLogin(hd)
	}
	mux.Handle("GET /{$}", h.RequireLogin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, h.path("/ui/"), http.StatusSeeOther)
	})))
	mux.Handle("GET /ui/{$}", page("overview", RoleViewer))
	mux.Handle("GET /ui/connections", page("connections", RoleViewer))
	mux.Handle("GET /ui/agents", page("agents", RoleViewer))
	mux.Handle("GET /ui/jobs", page("jobs", RoleViewer))
	mux.Handle("GET /ui/jobs/{id}", page("job", RoleViewer))
	mux.Handle("GET /ui/definitions", page("definitions", RoleViewer))
	mux.Handle("GET /ui/revocations", page("revocations", RoleViewer))
	mux.Handle("GET /ui/tokens", page("tokens", RoleOperator))
	mux.Handle("GET /ui/audit", page("audit", RoleAdmin))

	// Static files are public: the login and error pages use the style
	// sheet before anyone is signed in, and they hold no secrets.
	mux.HandleFunc("GET /ui/static/{path...}", serveStatic)

	mux.Handle("GET /ui/api/live-token", h.RequireLogin(http.HandlerFunc(h.serveLiveToken)))
	mux.Handle("GET /ui/api/history", h.RequireLogin(http.HandlerFunc(h.serveHistory)))
	mux.Handle("/ui/api/{path...}", h.Protect(h.RequireLogin(http.HandlerFunc(h.serveUIAPI))))
}

// nodeInfo describes this node on the Overview.
type nodeInfo struct {
	ID, PublicURL, Version string
}

// pageData is what every page template is executed with.
type pageData struct {
	Title   string
	Nav     string // the page's name: marks its nav link as current
	Base    string // the public URL's path, "" or "/prefix": put before every URL
	Script  string // the page's module, under static/
	User    string
	Subject string // the user's subject (the sub of the tokens the pages use)
	Role    Role
	Node    nodeInfo
	// CanOperate and IsAdmin show the controls of operators and admins;
	// the server checks the role again on every request.
	CanOperate, IsAdmin bool
	JobID               string        // the job page's job
	Overview            *overviewData // the Overview's counters at render time
}

// Asset returns the versioned URL of a static file (immutable caching).
func (d *pageData) Asset(name string) string { return d.Base + staticURL(name) }

// URL returns an absolute path of ours under the public URL's path.
func (d *pageData) URL(p string) string { return d.Base + p }

var pageTitles = map[string]string{
	"overview": "Overview", "connections": "Connections", "agents": "Agents", "jobs": "Jobs", "job": "Job", "definitions": "Test definitions",
	"revocations": "Revocations", "tokens": "Tokens", "audit": "Audit log",
}

// servePage renders a page for the signed-in user.
func (h *Handler) servePage(w http.ResponseWriter, r *http.Request, name string) {
	s := SessionFrom(r.Context())
	if s == nil { // the routes require a login; never reached
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	user := s.Name
	if user == "" {
		user = s.Subject
	}
	d := &pageData{
		Title: pageTitles[name], Nav: name, Base: h.base, Script: "js/pages/" + name + ".js",
		User: user, Subject: s.Subject, Role: s.Role, CanOperate: s.Role >= RoleOperator, IsAdmin: s.Role >= RoleAdmin,
		Node: nodeInfo{ID: h.cfg.NodeID, PublicURL: h.cfg.PublicURL.String(), Version: h.cfg.Version},
	}
	switch name {
	case "job":
		d.JobID = r.PathValue("id")
		d.Title = "Job " + d.JobID
		d.Nav = "jobs"
	case "overview":
		d.Overview = newOverviewData(h.cfg.Relay)
	}
	h.render(w, name, d)
}

// render executes a page into a buffer (a template error never sends half
// a page) and sends it with the pages' security headers.
func (h *Handler) render(w http.ResponseWriter, name string, d *pageData) {
	tmpls, err := pageTemplates()
	var buf bytes.Buffer
	if err == nil {
		err = tmpls[name].ExecuteTemplate(&buf, "layout.html", d)
	}
	if err != nil {
		h.log.Error("web: render page", "page", name, "err", err)
		http.Error(w, "internal error: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	setPageHeaders(w.Header(), h.pageCSP)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

func setPageHeaders(hd http.Header, csp string) {
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
}

// overviewData is the Overview's first paint: counters read from the relay
// when the page is rendered. The page's script keeps them live.
type overviewData struct {
	Connections int
	Topics      int
	Accepted    uint64
	ByPrefix    []namedCount
	TopTopics   []topicCount
	Drops       []namedCount // since the server started, by reason
}

type namedCount struct {
	Name  string
	Count uint64
}

type topicCount struct {
	Topic       string
	Connections int
	BytesIn     uint64
	BytesOut    uint64
}

// topTopics is how many topics the Overview lists.
const topTopics = 10

func newOverviewData(rs *relay.Server) *overviewData {
	d := &overviewData{}
	if rs == nil {
		return d
	}
	st := rs.Stats()
	d.Connections, d.Topics, d.Accepted = st.Connections, st.Topics, st.Accepted
	for _, reason := range relay.DropReasons() {
		d.Drops = append(d.Drops, namedCount{reason.String(), st.Drops[reason.String()]})
	}
	prefixes := map[string]uint64{}
	topics := map[string]*topicCount{}
	for _, c := range rs.Connections() {
		prefixes[c.Info.Prefix]++
		t := topics[c.Info.Topic]
		if t == nil {
			t = &topicCount{Topic: c.Info.Topic}
			topics[c.Info.Topic] = t
		}
		t.Connections++
		t.BytesIn += c.BytesIn
		t.BytesOut += c.BytesOut
	}
	for p, n := range prefixes {
		d.ByPrefix = append(d.ByPrefix, namedCount{p, n})
	}
	slices.SortFunc(d.ByPrefix, func(a, b namedCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Name, b.Name))
	})
	for _, t := range topics {
		d.TopTopics = append(d.TopTopics, *t)
	}
	slices.SortFunc(d.TopTopics, func(a, b topicCount) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(b.BytesIn+b.BytesOut, a.BytesIn+a.BytesOut),
			strings.Compare(a.Topic, b.Topic))
	})
	if len(d.TopTopics) > topTopics {
		d.TopTopics = d.TopTopics[:topTopics]
	}
	return d
}

// formatBytes shows n bytes with a binary unit: "512 B", "1.5 KiB".
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatCount shows a count with thousands separators: "10,000".
func formatCount(v any) string {
	var s string
	switch n := v.(type) {
	case int:
		s = fmt.Sprint(n)
	case uint64:
		s = fmt.Sprint(n)
	default:
		return fmt.Sprint(v)
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
