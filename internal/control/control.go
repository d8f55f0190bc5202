// Package control is the relay's control plane: revocation (practable's
// /bids/deny and /bids/allow, plus revocation by subject and token id), the
// status report and stats topic, Prometheus metrics, the token API for
// booking systems, and the audit log. Decisions are stored (package store)
// before they take effect, and take effect at once on every node: the
// Handler records a revocation, and the Enforcer publishes it on the
// cluster bus and applies it, as every node's Enforcer applies the events it
// receives (enforce.go): denied connections are closed with 4003 and their
// pending codes deleted.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxTokenTTL     = 24 * time.Hour
	DefaultMaxRefreshLife  = 7 * 24 * time.Hour
	DefaultStatsEvery      = 5 * time.Second
	maxBodyBytes           = 64 << 10
	maxRevocationValueLen  = 256
	maxRevocationReasonLen = 1024
)

// Config configures a Handler.
type Config struct {
	Store       store.Store
	Relay       *relay.Server
	Revocations *Revocations
	// Enforcer makes the revocations this handler records take effect, on
	// this node and (over the bus) on every other.
	Enforcer *Enforcer
	Verifier *auth.Verifier
	Key      *auth.Key // signs tokens minted by the token API
	// Audience is put in minted tokens: the relay's public URL.
	Audience string
	// MaxTokenTTL bounds the lifetime of minted tokens (default 24 h).
	MaxTokenTTL time.Duration
	// MaxRefreshLifetime bounds how long after its original issue a token
	// can be refreshed to (default 7 days).
	MaxRefreshLifetime time.Duration
	// Access, if set, provides access outcome counters for metrics, and
	// tells the token API which topics are the system's (SystemScope);
	// without it the token API knows of none.
	Access *access.Handler
	// Refusals, if set, returns the counts of requests the server refused
	// before any handler (rate limits, overload), by reason, for metrics.
	Refusals func() map[string]uint64
	// JobOutcomes, if set, returns how many jobs this node ended, by final
	// phase (jobs.Manager.Outcomes), for switchboard_jobs_ended_total.
	JobOutcomes func() map[string]uint64
	// Cluster, if set, serves GET /status?node=all, the health header of
	// /status and the cluster metrics (nodes.go).
	Cluster *ClusterStatus
	Logger  *slog.Logger
	Now     func() time.Time
}

// Handler serves the control-plane endpoints.
type Handler struct {
	cfg     Config
	metrics *Metrics
	// changeMu serialises revocation changes: the store write, the
	// in-memory set and the disconnects of one change happen before those
	// of the next, so memory and database agree whatever the interleaving.
	changeMu sync.Mutex
	// rates measures the connections' rates for GET /api/v1/connections.
	rates rateSampler
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Relay == nil || cfg.Revocations == nil || cfg.Enforcer == nil || cfg.Verifier == nil || cfg.Key == nil {
		return nil, errors.New("control: Store, Relay, Revocations, Enforcer, Verifier and Key are required")
	}
	switch {
	case cfg.MaxTokenTTL < 0:
		return nil, fmt.Errorf("control: max token TTL %v (--max-token-ttl): must not be negative; 0 means %v", cfg.MaxTokenTTL, DefaultMaxTokenTTL)
	case cfg.MaxRefreshLifetime < 0:
		return nil, fmt.Errorf("control: max refresh lifetime %v (--max-refresh-lifetime): must not be negative; 0 means %v", cfg.MaxRefreshLifetime, DefaultMaxRefreshLife)
	}
	if cfg.MaxTokenTTL == 0 {
		cfg.MaxTokenTTL = DefaultMaxTokenTTL
	}
	if cfg.MaxRefreshLifetime == 0 {
		cfg.MaxRefreshLifetime = DefaultMaxRefreshLife
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg}
	h.metrics = newMetrics(h)
	return h, nil
}

// Register adds the control-plane routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	// relay:admin passes every check (auth.Claims.Allows); the table of
	// scopes is in docs/control.md.
	// Denying and revoking is an operator's (relay:deny); undoing either,
	// and the audit log, are an admin's alone.
	// practable's routes (/bids/…) answer errors in practable's shape too
	// (practableErrors).
	mux.HandleFunc("POST /bids/deny", practableErrors(h.withScope([]string{auth.ScopeDeny}, h.serveDeny)))
	mux.HandleFunc("POST /bids/allow", practableErrors(h.admin(h.serveAllow)))
	mux.HandleFunc("POST /api/v1/revocations", h.withScope([]string{auth.ScopeDeny}, h.serveAddRevocation))
	mux.HandleFunc("DELETE /api/v1/revocations/{kind}/{value}", h.admin(h.serveRemoveRevocation))
	mux.HandleFunc("GET /api/v1/audit", h.admin(h.serveAudit))
	// Listing is status, not control: dashboard viewers (relay:stats) see it.
	mux.HandleFunc("GET /bids/deny", practableErrors(h.withScope([]string{auth.ScopeStats, auth.ScopeDeny}, h.serveListDenied)))
	mux.HandleFunc("GET /bids/allow", practableErrors(h.withScope([]string{auth.ScopeStats, auth.ScopeDeny}, h.serveListAllowed)))
	mux.HandleFunc("GET /api/v1/revocations", h.withScope([]string{auth.ScopeStats}, h.serveListRevocations))
	// What each minter may put in a token: checkMint (api.go).
	mux.HandleFunc("POST /api/v1/tokens", h.withScope([]string{auth.ScopeMint, auth.ScopeIssue}, h.serveMintToken))
	mux.HandleFunc("POST "+RefreshPath, h.serveRefresh)
	// Enrolling an agent is managing the job system's agents: jobs:admin
	// (an operator's), not relay:mint (enrol.go).
	mux.HandleFunc("POST /api/v1/agents/enrol", h.withScope([]string{auth.ScopeJobsAdmin}, h.serveEnrol))
	mux.HandleFunc("GET /status", h.withScope([]string{auth.ScopeStats}, h.serveStatus))
	mux.HandleFunc("GET /api/v1/connections", h.withScope([]string{auth.ScopeStats}, h.serveConnections))
	mux.HandleFunc("GET /metrics", h.withScope([]string{auth.ScopeStats}, h.metrics.serveScoped))
}

// PurgeEvery is how often expired revocations are deleted.
const PurgeEvery = 10 * time.Minute

// RunPurger deletes expired revocations and allowances from the store and
// from memory every PurgeEvery until ctx is done. A failed purge is logged
// and retried at the next tick: expired entries are ignored anyway.
func (h *Handler) RunPurger(ctx context.Context) {
	t := time.NewTicker(PurgeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := h.cfg.Now()
		var n int
		err := h.timed("purge", func() (err error) {
			n, err = h.cfg.Store.PurgeExpired(ctx, now)
			return err
		})
		if err != nil {
			h.cfg.Logger.Warn("control: purging expired revocations failed", "err", err)
			continue
		}
		h.cfg.Revocations.Purge(now)
		if n > 0 {
			h.cfg.Logger.Debug("control: purged expired revocations", "count", n)
		}
	}
}

// Metrics returns the handler's metrics, to serve on a separate listener.
func (h *Handler) Metrics() http.Handler { return h.metrics }

type scopedHandler func(w http.ResponseWriter, r *http.Request, c *auth.Claims)

func (h *Handler) admin(next scopedHandler) http.HandlerFunc {
	return h.withScope([]string{auth.ScopeAdmin}, next)
}

// withScope authenticates the request's bearer token and requires one of
// scopes, or relay:admin, which allows them all.
func (h *Handler) withScope(scopes []string, next scopedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, e := h.Authenticate(r)
		if e != nil {
			if e.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			apierr.Write(w, e)
			return
		}
		for _, s := range scopes {
			if c.Allows(s) {
				next(w, r, c)
				return
			}
		}
		need := scopes
		if !slices.Contains(need, auth.ScopeAdmin) {
			need = append(slices.Clip(need), auth.ScopeAdmin)
		}
		apierr.WriteNew(w, http.StatusForbidden, "scope_forbidden", "this endpoint needs scope "+strings.Join(need, " or "))
	}
}

// Authenticate checks a request's bearer token: signature, expiry and
// revocations (see Authenticator).
func (h *Handler) Authenticate(r *http.Request) (*auth.Claims, *apierr.Error) {
	a := Authenticator{Verifier: h.cfg.Verifier, Revocations: h.cfg.Revocations}
	return a.Authenticate(r)
}

// storeError answers a failed store call: 503 when the database is
// unavailable (or failing), never a 500.
func (h *Handler) storeError(w http.ResponseWriter, op string, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	h.cfg.Logger.Error("control: store failed", "op", op, "err", err)
	apierr.WriteNew(w, http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable; nothing was changed, retry later")
}

// timed runs a store call and records its latency.
func (h *Handler) timed(op string, f func() error) error {
	start := time.Now()
	err := f()
	h.metrics.observeStore(op, time.Since(start), err)
	return err
}

// --- practable-compatible deny/allow ---

// bidParams parses ?bid=…&exp=… as practable sends them.
func (h *Handler) bidParams(r *http.Request) (string, time.Time, *apierr.Error) {
	q := r.URL.Query()
	bid := q.Get("bid")
	if e := checkValue("bid", bid); e != nil {
		return "", time.Time{}, e
	}
	exp, e := parseExp(q.Get("exp"), h.cfg.Now())
	return bid, exp, e
}

func checkValue(name, v string) *apierr.Error {
	switch {
	case v == "":
		return apierr.New(http.StatusBadRequest, "invalid_"+name, name+" is required")
	case len(v) > maxRevocationValueLen:
		return apierr.New(http.StatusBadRequest, "invalid_"+name, fmt.Sprintf("%s longer than %d bytes", name, maxRevocationValueLen))
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return apierr.New(http.StatusBadRequest, "invalid_"+name, name+" contains control characters")
	}
	return nil
}

// parseExp parses a unix time in seconds that must be in the future.
func parseExp(s string, now time.Time) (time.Time, *apierr.Error) {
	if s == "" {
		return time.Time{}, apierr.New(http.StatusBadRequest, "invalid_exp", "exp (unix seconds when the entry may be forgotten) is required")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, apierr.New(http.StatusBadRequest, "invalid_exp", "exp must be unix seconds")
	}
	exp := time.Unix(n, 0)
	if !exp.After(now) {
		return time.Time{}, apierr.New(http.StatusBadRequest, "invalid_exp", "exp is in the past")
	}
	if exp.After(now.AddDate(10, 0, 0)) {
		return time.Time{}, apierr.New(http.StatusBadRequest, "invalid_exp", "exp is more than ten years ahead")
	}
	return exp, nil
}

func (h *Handler) serveDeny(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	bid, exp, e := h.bidParams(r)
	if e != nil {
		apierr.Write(w, e)
		return
	}
	if err := h.revoke(r.Context(), store.Revocation{Kind: store.RevokeBooking, Value: bid, Reason: "deny", ExpiresAt: exp}, c, "deny"); err != nil {
		h.storeError(w, "revoke", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) serveAllow(w http.ResponseWriter, r *http.Request, c *auth.Claims) {
	bid, exp, e := h.bidParams(r)
	if e != nil {
		apierr.Write(w, e)
		return
	}
	now := h.cfg.Now()
	allow := &store.Allowance{BookingID: bid, Actor: c.Subject, CreatedAt: now, ExpiresAt: exp}
	if _, err := h.unrevoke(r.Context(), store.RevokeBooking, bid, allow, c, "allow"); err != nil {
		h.storeError(w, "unrevoke", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type bookingIDs struct {
	BookingIDs []string `json:"booking_ids"`
}

func (h *Handler) serveListDenied(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	out := bookingIDs{BookingIDs: []string{}}
	for _, rv := range h.cfg.Revocations.List(store.RevokeBooking) {
		out.BookingIDs = append(out.BookingIDs, rv.Value)
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

func (h *Handler) serveListAllowed(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	out := bookingIDs{BookingIDs: []string{}}
	for _, a := range h.cfg.Revocations.Allowances() {
		out.BookingIDs = append(out.BookingIDs, a.BookingID)
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

// revoke records a revocation with its audit event, then has the Enforcer
// make it take effect everywhere: the in-memory sets, open connections
// (closed with 4003) and pending codes.
func (h *Handler) revoke(ctx context.Context, rv store.Revocation, actor *auth.Claims, action string) error {
	h.changeMu.Lock()
	defer h.changeMu.Unlock()
	now := h.cfg.Now()
	rv.Actor, rv.CreatedAt = actor.Subject, now
	ev := store.AuditEvent{Time: now, Actor: actor.Subject, Action: action, Target: string(rv.Kind) + ":" + rv.Value, Reason: rv.Reason,
		Detail: detailJSON(map[string]any{"expires_at": rv.ExpiresAt.UTC().Format(time.RFC3339)})}
	var revision int64
	if err := h.timed("revoke", func() (err error) { revision, err = h.cfg.Store.Revoke(ctx, rv, ev); return err }); err != nil {
		return err
	}
	closed := h.cfg.Enforcer.Enforce(RevocationEvent{Op: OpRevoke, Kind: rv.Kind, Value: rv.Value, Reason: rv.Reason,
		Actor: rv.Actor, CreatedAt: rv.CreatedAt, ExpiresAt: rv.ExpiresAt, Revision: revision})
	h.metrics.revocations.WithLabelValues(string(rv.Kind)).Inc()
	h.cfg.Logger.Info("revoked", "kind", rv.Kind, "value", rv.Value, "actor", actor.Subject, "closed", closed)
	return nil
}

func (h *Handler) unrevoke(ctx context.Context, kind store.RevocationKind, value string, allow *store.Allowance, actor *auth.Claims, action string) (bool, error) {
	h.changeMu.Lock()
	defer h.changeMu.Unlock()
	now := h.cfg.Now()
	ev := store.AuditEvent{Time: now, Actor: actor.Subject, Action: action, Target: string(kind) + ":" + value}
	var (
		removed  bool
		revision int64
	)
	err := h.timed("unrevoke", func() (err error) {
		removed, revision, err = h.cfg.Store.Unrevoke(ctx, kind, value, allow, ev)
		return err
	})
	if err != nil {
		return false, err
	}
	change := RevocationEvent{Op: OpUnrevoke, Kind: kind, Value: value, Actor: actor.Subject, CreatedAt: now, Revision: revision}
	if allow != nil {
		change.Allow, change.ExpiresAt = true, allow.ExpiresAt
	}
	h.cfg.Enforcer.Enforce(change)
	h.cfg.Logger.Info("revocation removed", "kind", kind, "value", value, "actor", actor.Subject, "existed", removed)
	return removed, nil
}

func detailJSON(v map[string]any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// decodeJSON reads a size-limited JSON body into v, refusing unknown
// fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) *apierr.Error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apierr.New(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body larger than %d bytes", maxBodyBytes))
		}
		if errors.Is(err, io.EOF) {
			return apierr.New(http.StatusBadRequest, "invalid_json", "request body is empty; a JSON object is required")
		}
		return apierr.New(http.StatusBadRequest, "invalid_json", "request body: "+err.Error())
	}
	if dec.More() {
		return apierr.New(http.StatusBadRequest, "invalid_json", "request body has data after the JSON object")
	}
	return nil
}
