package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// serveWithStderr runs `switchboard serve` on a free port with a fresh
// data dir and returns the data dir and serve's stderr (its log and the
// lines it prints), once the server listens.
func serveWithStderr(t *testing.T, extra ...string) (string, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cmd := newRootCommand(strings.NewReader(""), &out, &errOut)
		cmd.SetArgs(append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir}, extra...))
		done <- cmd.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	wait.For(t, "serve started", func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve ended: %v\n%s", err, errOut.String())
		default:
		}
		return strings.Contains(errOut.String(), "msg=serving")
	})
	wait.For(t, "public URL recorded", func() bool {
		u, _ := datadir.ReadPublicURL(dir)
		return u != ""
	})
	return dir, &errOut
}

var linkRE = regexp.MustCompile(`http://\S+/auth/link\?t=\S+`)

// useLink opens a login link in a fresh browser and returns the status.
func useLink(t *testing.T, link string) int {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestServePrintsLoginLinkAndLoginLinkCommand: serve, whose stderr is not
// a terminal (as under systemd or docker), writes its login link to the
// data directory's login-link file (mode 0600) and only says where in the
// log: neither the link nor its token is in serve's output (issue 12,
// item 14).
func TestServePrintsLoginLinkAndLoginLinkCommand(t *testing.T) {
	dir, stderr := serveWithStderr(t)
	file := filepath.Join(dir, datadir.LoginLinkFile)
	var link string
	wait.For(t, "login link written", func() bool {
		b, _ := os.ReadFile(file)
		link = linkRE.FindString(string(b))
		return link != ""
	})
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("login-link file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	wait.For(t, "the log record announcing the link", func() bool {
		return strings.Contains(stderr.String(), "one-time admin login link written in "+file)
	})
	token := link[strings.Index(link, "?t=")+len("?t="):]
	if out := stderr.String(); strings.Contains(out, token) || strings.Contains(out, "/auth/link") {
		t.Fatalf("the login link is in serve's output (its log):\n%s", out)
	}
	if got := useLink(t, link); got != http.StatusSeeOther {
		t.Fatalf("printed link: %d", got)
	}
	if got := useLink(t, link); got != http.StatusForbidden {
		t.Fatalf("printed link, second use: %d", got)
	}

	// login-link makes a fresh one from the data dir.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := run(ctx, nil, "login-link", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	fresh := strings.TrimSpace(out)
	if !linkRE.MatchString(fresh) || strings.Contains(fresh, "\n") || fresh == link {
		t.Fatalf("login-link printed %q", out)
	}
	if got := useLink(t, fresh); got != http.StatusSeeOther {
		t.Fatalf("fresh link: %d", got)
	}
	// A link for another public URL is refused by this server.
	out, err = run(ctx, nil, "login-link", "--data-dir", dir, "--public-url", "https://elsewhere.example")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := datadir.ReadPublicURL(dir)
	if got := useLink(t, strings.Replace(strings.TrimSpace(out), "https://elsewhere.example", pub, 1)); got != http.StatusBadRequest {
		t.Fatalf("link for another server: %d", got)
	}
	// Without a secret there is no link.
	if _, err := run(ctx, nil, "login-link", "--data-dir", t.TempDir()); err == nil {
		t.Fatal("login-link without a secret succeeded")
	}
}

func TestServeWithSingleSignOn(t *testing.T) {
	// The provider is down: serve starts all the same, prints no link,
	// and never logs the client secrets, even at debug level.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A provider that is down: it accepts and hangs up at once. (The port
	// stays ours, so no other test's server can answer in its place.)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	issuer := "http://" + ln.Addr().String()
	secretFile := filepath.Join(t.TempDir(), "gh")
	os.WriteFile(secretFile, []byte("gh-secret-value\n"), 0o600)
	t.Setenv("SWITCHBOARD_OIDC_CLIENT_SECRET", "oidc-secret-value")
	t.Setenv("SWITCHBOARD_OIDC_ADMIN_GROUPS", "admins,root")
	dir, stderr := serveWithStderr(t, "--log-level", "debug", "--oidc-issuer", issuer, "--oidc-client-id", "dash",
		"--github-client-id", "gh", "--github-client-secret-file", secretFile, "--github-allow-orgs", "lab")
	pub, _ := datadir.ReadPublicURL(dir)
	resp, err := http.Get(pub + "/auth/oidc/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("OIDC login with the provider down: %d", resp.StatusCode)
	}
	log := stderr.String()
	if !strings.Contains(log, "providers=oidc,github") || linkRE.MatchString(log) {
		t.Fatalf("serve's stderr:\n%s", log)
	}
	for _, secret := range []string{"oidc-secret-value", "gh-secret-value"} {
		if strings.Contains(log, secret) {
			t.Fatalf("secret %q in the log:\n%s", secret, log)
		}
	}
}

func TestServeRefusesBadLoginFlags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"--github-client-id", "gh", "--github-client-secret", "s"},                                      // no allowlist
		{"--github-allow-logins", "ann"},                                                                 // no client id
		{"--oidc-client-id", "dash"},                                                                     // no issuer
		{"--oidc-issuer", "https://id.example", "--oidc-client-id", "dash"},                              // no groups
		{"--oidc-issuer", "https://id.example", "--oidc-admin-groups", "a"},                              // no client id
		{"--oidc-client-secret", "a", "--oidc-client-secret-file", "/dev/null"},                          // both
		{"--oidc-issuer", "https://id.example", "--oidc-client-id", "c", "--oidc-default-role", "admin"}, // no allowlist
		{"--session-ttl", "0s"},
	} {
		_, err := run(ctx, nil, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...)...)
		if err == nil {
			t.Errorf("serve %v: started", args)
		}
	}
}

// TestLoginLinkOnATerminalIsPrintedApartFromTheLog: on a terminal the link
// is printed as plain text, and the log (here a buffer of its own) still
// holds only where it is.
func TestLoginLinkOnATerminalIsPrintedApartFromTheLog(t *testing.T) {
	dir := t.TempDir()
	const token = "eyJhbGciOiJIUzI1NiJ9.test-token.signature"
	link := "http://127.0.0.1:1/auth/link?t=" + token
	for _, terminal := range []bool{true, false} {
		var printed, logged strings.Builder
		log := slog.New(slog.NewTextHandler(&logged, nil))
		if err := announceLoginLink(&printed, terminal, log, link, time.Now().Add(15*time.Minute), dir); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logged.String(), token) || !strings.Contains(logged.String(), filepath.Join(dir, datadir.LoginLinkFile)) {
			t.Fatalf("terminal %v: log %q: the token is in it, or the file is not", terminal, logged.String())
		}
		if got := strings.Contains(printed.String(), "\n    "+link+"\n"); got != terminal {
			t.Fatalf("terminal %v: printed %q", terminal, printed.String())
		}
		if b, err := os.ReadFile(filepath.Join(dir, datadir.LoginLinkFile)); err != nil || string(b) != link+"\n" {
			t.Fatalf("terminal %v: file %q %v", terminal, b, err)
		}
	}
	if isTerminal(&strings.Builder{}) {
		t.Fatal("a buffer is a terminal")
	}
	f, err := os.Create(filepath.Join(dir, "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Fatal("a regular file is a terminal")
	}
	// A pseudo-terminal (what a shell's stderr is) is one.
	if pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0); err == nil {
		defer pty.Close()
		if !isTerminal(pty) {
			t.Fatal("a pseudo-terminal is not a terminal")
		}
	}
}
