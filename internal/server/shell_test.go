package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

var shellOpts = &client.Options{Prefix: "shell"}

func (s *testServer) shellToken(topic, scope string) string {
	c := s.claims(topic, scope)
	c.Prefix = "shell"
	return s.sign(c)
}

func (s *testServer) dialShell(topic, tok string) (*client.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.url, topic, tok, shellOpts)
	if err == nil {
		s.t.Cleanup(func() { c.CloseNow() })
	}
	return c, err
}

type connectMsg struct {
	Type, Session, URI string
}

// nextConnect reads the next connect message on a host control connection.
func nextConnect(t *testing.T, ctl *client.Conn) connectMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := ctl.Read(ctx)
	if err != nil {
		t.Fatalf("host control: %v", err)
	}
	var m connectMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Type != "connect" || len(m.Session) != 22 {
		t.Fatalf("connect message %s: %v", data, err)
	}
	return m
}

func TestShellSession(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.Relay.SendQueueBytes = 64 << 10; c.Relay.MaxMessageBytes = 32 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// No host yet: a clear refusal before any upgrade.
	if _, err := s.dialShell("ssh", s.shellToken("ssh", auth.ScopeClient)); !isAccessError(err, 503, "host_unavailable") {
		t.Fatalf("no host: %v", err)
	}
	ctl, err := s.dialShell("ssh", s.shellToken("ssh", auth.ScopeHost))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, "host registered", func() bool { return s.Relay().Readers("shell-host:ssh") == 1 })

	// Two users, two independent sessions.
	type session struct{ user, host *client.Conn }
	var sessions []session
	for range 2 {
		userCh := make(chan *client.Conn, 1)
		go func() {
			u, err := s.dialShell("ssh", s.shellToken("ssh", auth.ScopeClient))
			if err != nil {
				t.Error(err)
			}
			userCh <- u
		}()
		m := nextConnect(t, ctl)
		host, err := client.DialURI(ctx, m.URI, nil)
		if err != nil {
			t.Fatalf("host dials session: %v", err)
		}
		t.Cleanup(func() { host.CloseNow() })
		sessions = append(sessions, session{user: <-userCh, host: host})
	}
	// A 4 MiB transfer each way through a 64 KiB queue: back-pressure, not
	// drops, and each session sees only its own bytes.
	var wg sync.WaitGroup
	for i, ss := range sessions {
		for _, dir := range [][2]*client.Conn{{ss.user, ss.host}, {ss.host, ss.user}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := transfer(ctx, dir[0], dir[1], 4<<20, byte(i)); err != nil {
					t.Errorf("session %d: %v", i, err)
				}
			}()
		}
	}
	wg.Wait()
	if st := s.Relay().Stats(); st.Drops["queue_head"]+st.Drops["queue_tail"] != 0 {
		t.Fatalf("drops in shell sessions: %+v", st.Drops)
	}
	// The user leaves: the host's side is closed with 1000.
	sessions[0].user.Close()
	expectClose(t, sessions[0].host, 1000)
	// The other session is unaffected.
	sessions[1].host.Write(ctx, client.Binary, []byte("still here"))
	if _, data, err := sessions[1].user.Read(ctx); err != nil || string(data) != "still here" {
		t.Fatalf("other session: %q %v", data, err)
	}
}

// transfer sends n random bytes from src to dst in chunks and checks them.
func transfer(ctx context.Context, src, dst *client.Conn, n int, seed byte) error {
	data := make([]byte, n)
	rand.Read(data)
	data[0] = seed
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		for off := 0; off < n; off += 16 << 10 {
			if err := src.Write(ctx, client.Binary, data[off:min(off+16<<10, n)]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	h := sha256.New()
	var got int
	for got < n {
		_, p, err := dst.Read(ctx)
		if err != nil {
			return err
		}
		h.Write(p)
		got += len(p)
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		return errors.New("bytes differ")
	}
	return nil
}

func isAccessError(err error, status int, code string) bool {
	var ae *client.AccessError
	return errors.As(err, &ae) && ae.Status == status && string(ae.Code) == code
}

func TestShellRefusalsAndTimeouts(t *testing.T) {
	s := startServer(t, func(c *Config, d *Deps) { c.ShellAnswerTimeout = 200 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	both := s.claims("ssh", auth.ScopeHost, auth.ScopeClient)
	both.Prefix = "shell"
	if _, err := s.dialShell("ssh", s.sign(both)); !isAccessError(err, 403, "scope_forbidden") {
		t.Fatalf("host+client token: %v", err)
	}
	if _, err := s.dialShell("ssh", s.shellToken("ssh", "read")); !isAccessError(err, 403, "scope_forbidden") {
		t.Fatalf("read token on shell: %v", err)
	}
	if _, err := s.dialShell("ssh", s.token("ssh", "read")); !isAccessError(err, 403, "prefix_forbidden") {
		t.Fatalf("session token on shell: %v", err)
	}

	ctl, err := s.dialShell("ssh", s.shellToken("ssh", auth.ScopeHost))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, "host registered", func() bool { return s.Relay().Readers("shell-host:ssh") == 1 })
	// A host that does not answer: the user is closed with 4004.
	user, err := s.dialShell("ssh", s.shellToken("ssh", auth.ScopeClient))
	if err != nil {
		t.Fatal(err)
	}
	m := nextConnect(t, ctl)
	expectClose(t, user, 4004)
	// Its session URI is no longer usable.
	if _, err := client.DialURI(ctx, m.URI, nil); !isAccessError(err, 410, "session_gone") {
		t.Fatalf("late host dial: %v", err)
	}
	// A second host supersedes the first.
	ctl2, err := s.dialShell("ssh", s.shellToken("ssh", auth.ScopeHost))
	if err != nil {
		t.Fatal(err)
	}
	expectClose(t, ctl, 4009)
	wait.For(t, "new host registered", func() bool { return s.Relay().Readers("shell-host:ssh") == 1 })
	// The host goes away while a session waits: the user gets 4004 at once.
	s2 := startServer(t, func(c *Config, d *Deps) { c.ShellAnswerTimeout = time.Minute })
	ctl3, err := s2.dialShell("vnc", s2.shellToken("vnc", auth.ScopeHost))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, "host registered", func() bool { return s2.Relay().Readers("shell-host:vnc") == 1 })
	waiting, err := s2.dialShell("vnc", s2.shellToken("vnc", auth.ScopeClient))
	if err != nil {
		t.Fatal(err)
	}
	nextConnect(t, ctl3)
	start := time.Now()
	ctl3.Close()
	expectClose(t, waiting, 4004)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("user waited %v after the host left", d)
	}
	// The newest host serves sessions.
	tok := s.shellToken("ssh", auth.ScopeClient)
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := client.Dial(ctx, s.url, "ssh", tok, shellOpts); err == nil {
			c.CloseNow()
		}
	}()
	nextConnect(t, ctl2)
	<-dialed
}
