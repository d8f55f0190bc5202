// Package web is the dashboard: single sign-on (OpenID Connect, GitHub
// OAuth, or a one-time admin login link), server-side sessions kept in the
// store (shared by a cluster's nodes) and named by an encrypted cookie, and
// the pages (Overview, Connections, Agents, Jobs, Revocations, Tokens,
// Audit) served from templates and JavaScript modules embedded in the
// binary. Pages get their live data through the relay itself: a
// short-lived read token for the system topics, over websocket.
//
// The dashboard's state-changing requests go through /ui/api/, which
// checks the session, the user's role and cross-origin protection, then
// hands the request to the server's own API (/api/v1/…, /bids/…) with a
// token minted for the user for that one request: one implementation of
// every operation, whether called by a script or by the page.
package web

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
)

// Role is what a dashboard user may do. Roles are ordered: each includes
// the ones below it.
type Role int

// Roles.
const (
	RoleNone     Role = iota // not allowed in
	RoleViewer               // sees everything, changes nothing
	RoleOperator             // also denies and revokes, mints tokens, launches and aborts jobs
	RoleAdmin                // also reads the audit log and removes revocations
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole reads "viewer", "operator" or "admin".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "viewer":
		return RoleViewer, nil
	case "operator":
		return RoleOperator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("role %q: want viewer, operator or admin", s)
}

// Scopes returns the token scopes a user with role r acts with on the
// server's API, which enforces them (docs/control.md, "Scopes"): each role's
// are exactly its rights, and include those of the roles below it.
func (r Role) Scopes() []string {
	switch r {
	case RoleViewer:
		return []string{auth.ScopeStats, auth.ScopeJobsRead}
	case RoleOperator:
		return []string{auth.ScopeStats, auth.ScopeJobsRead, auth.ScopeJobsWrite, auth.ScopeJobsAdmin, auth.ScopeDeny, auth.ScopeMint}
	case RoleAdmin:
		return []string{auth.ScopeStats, auth.ScopeJobsRead, auth.ScopeJobsWrite, auth.ScopeJobsAdmin, auth.ScopeDeny, auth.ScopeMint, auth.ScopeAdmin}
	}
	return nil
}

// Session is a logged-in user.
type Session struct {
	ID       string // random, 128 bits, base64url; the cookie carries it encrypted, the store its SHA-256
	Subject  string // stable user id: "oidc:<sub>", "github:<login>" or "link:admin"
	Name     string // for display
	Email    string
	Provider string // "oidc", "github" or "link"
	Role     Role
	Created  time.Time
	Expires  time.Time
}

type sessionKey struct{}

// WithSession returns ctx carrying s.
func WithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// SessionFrom returns the session of a request that passed RequireLogin
// (or RequireRole), or nil.
func SessionFrom(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}
