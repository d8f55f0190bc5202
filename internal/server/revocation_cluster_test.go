package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/web"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// TestRevokingASubjectOnOneNodeEndsItsSessionsOnAnother: two whole nodes
// on one in-memory bus network, each with its own store. A subject revoked
// through node a's API is enforced on node b: b closes the subject's relay
// connection with 4003, ends its dashboard session (the cookie no longer
// works, even after the revocation is lifted) and refuses its tokens; when
// a lifts the revocation, b admits the subject again.
func TestRevokingASubjectOnOneNodeEndsItsSessionsOnAnother(t *testing.T) {
	nodes := memCluster(t, 2)
	a, b := nodes["a"], nodes["b"]

	// On b: a dashboard session of the login-link subject, and a relay
	// connection of the same subject.
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) int {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	link, _, err := b.Dashboard().LoginLink()
	if err != nil {
		t.Fatal(err)
	}
	if status := get(link); status != http.StatusSeeOther {
		t.Fatalf("b's login link: %d", status)
	}
	if status := get(b.URL + "/ui/"); status != http.StatusOK {
		t.Fatalf("b's dashboard with the session: %d", status)
	}
	userToken := func() string {
		c := b.Claims("t1", auth.ScopeRead)
		c.Subject = web.LinkSubject
		return b.Sign(t, c)
	}
	conn := b.DialToken(t, "t1", userToken())

	api := func(s *servertest.Server, method, path, body string) int {
		t.Helper()
		c := s.Claims("", auth.ScopeAdmin)
		c.Subject, c.Prefix = "operator", ""
		req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.Sign(t, c))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if status := api(a, "POST", "/api/v1/revocations", `{"kind":"subject","value":"`+web.LinkSubject+`","ttl":"1h"}`); status != http.StatusOK {
		t.Fatalf("revoke on a: %d", status)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	var ce *client.CloseError
	if _, _, err := conn.Read(ctx); !errors.As(err, &ce) || ce.Code != wire.CloseDenied {
		t.Fatalf("b's connection of the revoked subject: %v, want close %d", err, wire.CloseDenied)
	}
	wait.For(t, "b's dashboard session ended", func() bool { return get(b.URL+"/ui/") == http.StatusSeeOther })
	if _, err := client.Dial(ctx, b.URL, "t1", userToken(), nil); err == nil {
		t.Fatal("b admitted the revoked subject")
	}

	if status := api(a, "DELETE", "/api/v1/revocations/subject/"+url.PathEscape(web.LinkSubject), ""); status != http.StatusNoContent {
		t.Fatalf("lift on a: %d", status)
	}
	wait.For(t, "b admits the subject again", func() bool {
		c, err := client.Dial(ctx, b.URL, "t1", userToken(), nil)
		if err != nil {
			return false
		}
		c.CloseNow()
		return true
	})
	if status := get(b.URL + "/ui/"); status != http.StatusSeeOther {
		t.Fatalf("b's ended dashboard session after the lift: %d, want 303 to the login page", status)
	}
}
