package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/web"
)

// TestDashboardLoginLinkCannotBeRefreshedIntoASecondUse performs the
// attack of issue 12, item 10: refresh a login link's token through the
// token refresh endpoint before using the link, use the link, then use the
// refreshed token as a second link once the record of the first use has
// expired. The refresh is refused, the link signs in once, and a link
// token refreshed by a server without this fix (same jti, later expiry,
// orig_iat set) is not a login link, even after the first use's record
// has expired.
func TestDashboardLoginLinkCannotBeRefreshedIntoASecondUse(t *testing.T) {
	s := startServer(t, nil)
	link, exp, err := s.Dashboard().LoginLink()
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	linkToken := u.Query().Get("t")

	refresh := func(tok string) (int, string) {
		t.Helper()
		resp, body := fetch(t, http.DefaultClient, "POST", s.url+"/api/v1/account/token/refresh", tok)
		var e apiError
		if resp.StatusCode != http.StatusOK {
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("refresh: %d, not a JSON error: %s", resp.StatusCode, body)
			}
		}
		return resp.StatusCode, e.Error.Code
	}
	// At once, and late in the link's life (when a refresh would push its
	// expiry furthest).
	if status, code := refresh(linkToken); status != http.StatusForbidden || code != "token_not_refreshable" {
		t.Fatalf("refresh of a login link's token: %d %q, want 403 token_not_refreshable", status, code)
	}
	s.clock.Advance(web.LoginLinkTTL - time.Minute)
	if status, code := refresh(linkToken); status != http.StatusForbidden || code != "token_not_refreshable" {
		t.Fatalf("late refresh of a login link's token: %d %q, want 403 token_not_refreshable", status, code)
	}

	// The link signs in once.
	if resp, body := fetch(t, browser(t), "GET", link, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use: %d %s", resp.StatusCode, body)
	}
	if resp, body := fetch(t, browser(t), "GET", link, ""); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("second use: %d %s", resp.StatusCode, body)
	}

	// What an older server's refresh handed out a minute before the link
	// expired: the same claims, a fresh iat and expiry, and orig_iat.
	v := auth.NewVerifier(s.key, s.url, auth.VerifierOptions{Now: s.clock.Now})
	c, err := v.Verify(linkToken)
	if err != nil {
		t.Fatal(err)
	}
	orig := c.IssuedAt
	c.IssuedAt = jwt.NewNumericDate(s.clock.Now())
	c.NotBefore = c.IssuedAt
	c.ExpiresAt = jwt.NewNumericDate(s.clock.Now().Add(web.LoginLinkTTL))
	c.OrigIssuedAt = orig
	refreshedLink := strings.Replace(link, linkToken, s.sign(*c), 1)

	// Past the time the first use's record could have expired (the link's
	// expiry, the verifier's leeway and a margin), the link and the
	// refreshed token each still sign in zero times.
	s.clock.Advance(exp.Add(auth.DefaultLeeway + 3*time.Minute).Sub(s.clock.Now()))
	for what, l := range map[string]string{"the link": link, "the refreshed link token": refreshedLink} {
		if resp, body := fetch(t, browser(t), "GET", l, ""); resp.StatusCode == http.StatusSeeOther {
			t.Errorf("%s, after its use's record would have expired: signed in (%s)", what, body)
		}
	}
}
