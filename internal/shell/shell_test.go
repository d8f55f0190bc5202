package shell

import (
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// noAccess is an Access for tests that issue no codes.
type noAccess struct{}

func (noAccess) IssuePeer(access.Grant) (string, error)  { return "", nil }
func (noAccess) CheckDenied(*access.Grant) *apierr.Error { return nil }

func newEndpoint(t *testing.T) *Endpoint {
	t.Helper()
	rs, err := relay.NewServer(relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Access: noAccess{}, Relay: rs})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestNewChecksConfig(t *testing.T) {
	rs, err := relay.NewServer(relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Relay: rs}); err == nil {
		t.Error("New without Access succeeded")
	}
	if _, err := New(Config{Access: noAccess{}}); err == nil {
		t.Error("New without Relay succeeded")
	}
	if _, err := New(Config{Access: noAccess{}, Relay: rs, AnswerTimeout: -1}); err == nil || !strings.Contains(err.Error(), "must not be negative") {
		t.Errorf("negative answer timeout: %v", err)
	}
	e, err := New(Config{Access: noAccess{}, Relay: rs})
	if err != nil || e.cfg.AnswerTimeout != DefaultAnswerTimeout {
		t.Errorf("zero answer timeout: %v, %v; want %v", err, e.cfg.AnswerTimeout, DefaultAnswerTimeout)
	}
}

// TestAuthorizeRoles: a shell token is a host's or a user's, never both;
// a user is refused while no host serves the topic.
func TestAuthorizeRoles(t *testing.T) {
	e := newEndpoint(t)
	for _, tc := range []struct {
		name   string
		scopes []string
		status int
		code   wire.ErrorCode
		role   string
	}{
		{"host", []string{auth.ScopeHost}, 0, "", roleHost},
		{"both", []string{auth.ScopeHost, auth.ScopeClient}, http.StatusForbidden, wire.ErrorScopeForbidden, ""},
		{"neither", []string{auth.ScopeRead}, http.StatusForbidden, wire.ErrorScopeForbidden, ""},
		{"client, no host", []string{auth.ScopeClient}, http.StatusServiceUnavailable, wire.ErrorHostUnavailable, ""},
	} {
		p, err := e.Authorize(&auth.Claims{Scopes: tc.scopes}, "ssh")
		switch {
		case tc.status == 0 && (err != nil || p.Role != tc.role || !p.CanRead || !p.CanWrite):
			t.Errorf("%s: %+v %v, want role %s reading and writing", tc.name, p, err, tc.role)
		case tc.status != 0 && (err == nil || err.Status != tc.status || err.Code != string(tc.code)):
			t.Errorf("%s: %v, want %d %s", tc.name, err, tc.status, tc.code)
		}
	}
}

// TestAdmitUnknownSession: the host's side of a session that is not
// pending (ended, withdrawn, or already claimed) is refused with 410.
func TestAdmitUnknownSession(t *testing.T) {
	e := newEndpoint(t)
	_, err := e.Admit(access.Grant{Prefix: wire.PrefixShell, Topic: "ssh/s1", Role: roleSession, Session: "s1"})
	if err == nil || err.Status != http.StatusGone || err.Code != string(wire.ErrorSessionGone) {
		t.Fatalf("admit of a session that is not pending: %v, want 410 session_gone", err)
	}
	if _, err := e.Admit(access.Grant{Prefix: wire.PrefixShell, Topic: "ssh", Role: roleClient}); err == nil || err.Code != string(wire.ErrorHostUnavailable) {
		t.Fatalf("admit of a user with no host: %v, want 503 host_unavailable", err)
	}
}
