package web

// Live data reaches the pages through the relay itself. A page asks
// GET /ui/api/live-token?topic=T for a short-lived read token for one
// topic, then follows the normal access flow with it (POST
// /session/{topic} → {"uri"} → websocket; static/js/live.js), and does it
// again, with backoff, whenever the connection ends. The topics:
//
//   - stats: the status report (every connection, control.ConnReport),
//     every few seconds and soon after any connect or disconnect; in a
//     cluster each report is followed by the cluster section (every node's
//     summary, control.ClusterReport), sent again when a node comes or goes;
//   - stats/summary: the node's aggregates (control.Summary: counts,
//     busiest topics, drops, traffic counters, the dashboard's own traffic)
//     at the same moments, a few KiB whatever the number of connections:
//     what the Overview reads (and the cluster section after each);
//   - stats/changes: a notice (control.ChangeNotice: the time and the
//     connection count, about 50 bytes) at the same moments: the
//     Connections page then asks for its page of rows
//     (/ui/api/api/v1/connections, only the changed rows in full);
//   - agents: agent connect and disconnect events;
//   - jobs/{id}/log: a job's output lines, for its owner and operators.
//
// So the dashboard costs the server one relay connection per open page,
// counted and revocable like any other: revoking a user's subject also
// ends their live views.

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// liveTokenTTL is the lifetime of a live-data token. A connection ends when
// its token expires; live.js opens the next one just before.
const liveTokenTTL = 5 * time.Minute

// Live topics (control.StatsTopic, jobs.AgentsTopic, jobs.LogTopicPrefix).
const (
	statsTopic     = "stats"
	summaryTopic   = "stats/summary"
	changesTopic   = "stats/changes"
	agentsTopic    = "agents"
	jobTopicPrefix = "jobs/"
	jobTopicSuffix = "/log"
	livePrefix     = wire.PrefixSession
)

// liveToken is the answer of /ui/api/live-token.
type liveToken struct {
	Token     string    `json:"token"`
	Topic     string    `json:"topic"`
	Prefix    string    `json:"prefix"`
	ExpiresAt time.Time `json:"expires_at"`
}

// serveLiveToken serves GET /ui/api/live-token?topic=stats|stats/summary|stats/changes|agents|jobs/{id}/log.
func (h *Handler) serveLiveToken(w http.ResponseWriter, r *http.Request) {
	s := SessionFrom(r.Context())
	if s == nil || s.Role < RoleViewer {
		apierr.WriteNew(w, http.StatusForbidden, "role_forbidden", "this needs the viewer role")
		return
	}
	t := r.URL.Query().Get("topic")
	var scopes []string
	switch {
	case t == statsTopic || t == summaryTopic || t == changesTopic || t == agentsTopic:
		scopes = []string{auth.ScopeRead, auth.ScopeStats}
	case strings.HasPrefix(t, jobTopicPrefix) && strings.HasSuffix(t, jobTopicSuffix):
		id := strings.TrimSuffix(strings.TrimPrefix(t, jobTopicPrefix), jobTopicSuffix)
		if id == "" || strings.Contains(id, "/") || topic.Valid(t) != nil {
			apierr.WriteNew(w, http.StatusBadRequest, wire.ErrorInvalidTopic, "topic must be stats, stats/summary, stats/changes, agents or jobs/{id}/log")
			return
		}
		if !h.mayReadJob(w, r, s, id) {
			return
		}
		scopes = []string{auth.ScopeRead}
	default:
		apierr.WriteNew(w, http.StatusBadRequest, wire.ErrorInvalidTopic, "topic must be stats, stats/summary, stats/changes, agents or jobs/{id}/log")
		return
	}
	tok, exp, err := h.mintToken(s, liveTokenTTL, t, livePrefix, scopes)
	if err != nil {
		h.log.Error("web: sign live token", "err", err)
		apierr.WriteNew(w, http.StatusServiceUnavailable, "sign_failed", "could not sign the token")
		return
	}
	apierr.WriteJSON(w, http.StatusOK, liveToken{Token: tok, Topic: t, Prefix: livePrefix, ExpiresAt: exp.UTC()})
}

// mayReadJob asks the jobs API, as the user, for job id: the API lets its
// owner and jobs:admin (operators and admins) see it. If it refuses, its answer is
// sent on and mayReadJob returns false.
func (h *Handler) mayReadJob(w http.ResponseWriter, r *http.Request, s *Session, id string) bool {
	if h.cfg.API == nil {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "api_unavailable", "the server's API is not connected to the dashboard")
		return false
	}
	get, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "/", nil)
	if err != nil {
		apierr.WriteNew(w, http.StatusInternalServerError, "internal", "cannot build the request")
		return false
	}
	get.Header.Set("Accept", "application/json")
	get, e := h.apiRequest(get, s, &url.URL{Path: "/api/v1/jobs/" + id})
	if e != nil {
		apierr.Write(w, e)
		return false
	}
	rec := &statusRecorder{header: http.Header{}}
	h.cfg.API.ServeHTTP(rec, get)
	if rec.status == http.StatusOK {
		return true
	}
	hd := w.Header()
	for _, k := range []string{"Content-Type", "Cache-Control"} {
		if v := rec.header.Get(k); v != "" {
			hd.Set(k, v)
		}
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
	return false
}

// statusRecorder keeps an in-process answer's status, headers and the
// start of its body (enough for a JSON error).
type statusRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

const maxRecordedBody = 8 << 10

func (r *statusRecorder) Header() http.Header { return r.header }

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if room := maxRecordedBody - r.body.Len(); room > 0 {
		r.body.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}
