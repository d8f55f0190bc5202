package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/web"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestDashboardRevokingASubjectEndsItsSessionsAtOnce performs the attack
// of issue 12, item 11: a user's subject is revoked while their dashboard
// session is idle, and the revocation is lifted later (it expired, or an
// operator removed it). The session must have ended when the revocation
// was recorded, not merely been refused while the revocation lasted: the
// cookie does not work again. The page's live view (a relay connection
// under the user's subject) is closed with 4003 by the same revocation.
func TestDashboardRevokingASubjectEndsItsSessionsAtOnce(t *testing.T) {
	s := startServer(t, nil)
	b := browser(t)
	link, _, err := s.Dashboard().LoginLink()
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := fetch(t, b, "GET", link, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login link: %d %s", resp.StatusCode, body)
	}
	page := func() int {
		t.Helper()
		resp, _ := fetch(t, b, "GET", s.url+"/ui/", "")
		return resp.StatusCode
	}
	if got := page(); got != http.StatusOK {
		t.Fatalf("the dashboard with the session: %d", got)
	}
	// The page's live view of the stats topic.
	resp, body := fetch(t, b, "GET", s.url+"/ui/api/live-token?topic=stats", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("live token: %d %s", resp.StatusCode, body)
	}
	var live struct{ Token string }
	if err := json.Unmarshal([]byte(body), &live); err != nil {
		t.Fatal(err)
	}
	conn := s.dial("stats", live.Token)

	admin := s.sign(s.claims("", auth.ScopeAdmin))
	req, _ := http.NewRequest("POST", s.url+"/api/v1/revocations",
		strings.NewReader(`{"kind":"subject","value":"`+web.LinkSubject+`","ttl":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	if status, code, _ := do(t, req); status != http.StatusOK {
		t.Fatalf("revoke subject: %d %s", status, code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for { // bounded by ctx: the stats reports until the close
		_, _, err := conn.Read(ctx)
		if err == nil {
			continue
		}
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != 4003 {
			t.Fatalf("the live view after the revocation: %v, want close 4003", err)
		}
		break
	}

	// Lifted without the session having been used in between.
	req, _ = http.NewRequest("DELETE", s.url+"/api/v1/revocations/subject/"+url.PathEscape(web.LinkSubject), nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if status, code, _ := do(t, req); status != http.StatusNoContent {
		t.Fatalf("remove the revocation: %d %s", status, code)
	}
	if got := page(); got != http.StatusSeeOther {
		t.Fatalf("the revoked session's cookie after the revocation was lifted: %d, want 303 to the login page", got)
	}
}
