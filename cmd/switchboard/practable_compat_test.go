package main

// The practable compatibility suite (issue 18; docs/migrating-from-practable.md):
// each test names the behaviour of practable/relay (or of a practable client)
// it pins, and checks it against a real node over real sockets.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/agent"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// practableDial connects as practable's clients do (reconws.ReconnectAuth):
// POST {base}/session/{topic} with the bare token in Authorization, then a
// websocket to the "uri" of the answer, sending origin if not empty.
func practableDial(t *testing.T, base, topic, token, origin string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/session/"+topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		URI string `json:"uri"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&answer) != nil || answer.URI == "" {
		t.Fatalf("access request for %s: %s", topic, resp.Status)
	}
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	c, _, err := websocket.Dial(ctx, answer.URI, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("websocket to the access answer's uri: %v", err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// readJSON reads messages from c until one decodes into v, for up to d.
func readText(t *testing.T, c *websocket.Conn, d time.Duration) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a %v message, want text", typ)
	}
	return b
}

// practableReportKeys are the members of practable/relay's
// crossbar.ClientReport, the stats report practable/status decodes.
var practableReportKeys = []string{"canRead", "canWrite", "connected", "expiresAt", "remoteAddr", "scopes", "topic", "userAgent"}

// TestPractableStatsFeed pins practable/relay's stats topic as
// practable/status uses it: a session token for topic "stats" with scope
// "read" alone (no relay:stats) reads a JSON array of crossbar.ClientReport
// objects, field by field (camelCase, times as UTC seconds, the topic
// practable's clients named); a writer's {"cmd":"update"} asks for a report
// at once (statsReporter); a token with relay:stats still reads
// Switchboard's own report.
func TestPractableStatsFeed(t *testing.T) {
	srv := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.PractableStats = auth.ScopeRead
		c.StatsEvery = time.Hour // only the update command publishes
	})
	expt := srv.Claims("expt00-st-data", "read", "write", "expt")
	expt.BookingID = "b1"
	practableDialWithUA(t, srv.URL, "expt00-st-data", srv.Sign(t, expt), "practable-host/1")

	status := practableDial(t, srv.URL, "stats", srv.Token(t, "stats", "read"), "")
	page := practableDial(t, srv.URL, "stats", srv.Token(t, "stats", "read", "write"), "")
	wait.For(t, "three connections", func() bool { return len(srv.Relay().Connections()) == 3 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := page.Write(ctx, websocket.MessageText, []byte(`{"cmd":"update"}`)); err != nil {
		t.Fatal(err)
	}
	// practable relays the command to the topic's other readers too.
	if b := readText(t, status, 10*time.Second); string(b) != `{"cmd":"update"}` {
		t.Fatalf("status reader first got %s, want the relayed command", b)
	}
	b := readText(t, status, 10*time.Second)
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("report is not a JSON array of objects: %v\n%s", err, b)
	}
	if len(raw) != 3 {
		t.Fatalf("report has %d connections, want 3:\n%s", len(raw), b)
	}
	for i, r := range raw {
		keys := make([]string, 0, len(r))
		for k := range r {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, practableReportKeys) {
			t.Fatalf("report %d has members %v, want practable's %v", i, keys, practableReportKeys)
		}
	}
	// Field by field, as practable/status's relay/pkg/status.Report decodes.
	var reports []struct {
		CanRead    bool      `json:"canRead"`
		CanWrite   bool      `json:"canWrite"`
		Connected  time.Time `json:"connected"`
		ExpiresAt  time.Time `json:"expiresAt"`
		RemoteAddr string    `json:"remoteAddr"`
		Scopes     []string  `json:"scopes"`
		Topic      string    `json:"topic"`
		UserAgent  string    `json:"userAgent"`
	}
	if err := json.Unmarshal(b, &reports); err != nil {
		t.Fatal(err)
	}
	e := reports[0]
	if e.Topic != "expt00-st-data" || !e.CanRead || !e.CanWrite || !slices.Equal(e.Scopes, []string{"read", "write", "expt"}) ||
		e.UserAgent != "practable-host/1" || !e.ExpiresAt.Equal(expt.ExpiresAt.Time.Truncate(time.Second)) ||
		time.Since(e.Connected) > time.Minute || e.Connected.Location() != time.UTC || e.RemoteAddr == "" {
		t.Fatalf("the experiment's report: %+v", e)
	}
	var first struct {
		Connected string `json:"connected"`
		ExpiresAt string `json:"expiresAt"`
	}
	json.Unmarshal(raw[0]["connected"], &first.Connected)
	json.Unmarshal(raw[0]["expiresAt"], &first.ExpiresAt)
	for _, s := range []string{first.Connected, first.ExpiresAt} {
		if _, err := time.Parse("2006-01-02T15:04:05Z", s); err != nil {
			t.Fatalf("time %q is not practable's UTC seconds (2006-01-02T15:04:05Z)", s)
		}
	}
	if s, p := reports[1], reports[2]; s.Topic != "stats" || p.Topic != "stats" || !s.CanRead || s.CanWrite || !p.CanWrite {
		t.Fatalf("the stats readers' reports: %+v %+v", s, p)
	}

	// A relay:stats token reads Switchboard's own feed, as before.
	ours := srv.Dial(t, "stats", auth.ScopeStats)
	wait.For(t, "our reader on the stats topic", func() bool { return srv.TopicConns("stats") == 1 })
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	// Our feed reports within its debounce of a connect.
	_, ob, err := ours.Read(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ob), `"can_read"`) || strings.Contains(string(ob), `"canRead"`) {
		t.Fatalf("relay:stats reader got %s, want Switchboard's report", ob)
	}
	if n := srv.TopicConns(access.PractableStatsRelayTopic); n != 2 {
		t.Fatalf("%d connections on the practable feed, want 2", n)
	}
}

// practableDialWithUA is practableDial with a User-Agent on the websocket.
func practableDialWithUA(t *testing.T, base, topic, token, ua string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uri, err := client.Access(ctx, base, topic, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := websocket.Dial(ctx, uri, &websocket.DialOptions{HTTPHeader: http.Header{"User-Agent": {ua}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestPractableStatsFeedRefusedWithoutScope: with --practable-stats unset a
// plain read token for "stats" is refused (403) as before; with it set, a
// token without the configured scope is refused too, and so is a pattern
// token ("*"): practable's tokens name the stats topic itself.
func TestPractableStatsFeedRefusedWithoutScope(t *testing.T) {
	for _, tc := range []struct {
		name, scope, topic string
		scopes             []string
	}{
		{"feed off", "", "stats", []string{"read"}},
		{"scope missing", "practable:stats", "stats", []string{"read"}},
		{"pattern token", "read", "*", []string{"read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := servertest.Start(t, func(c *server.Config, _ *server.Deps) { c.PractableStats = tc.scope })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := client.Access(ctx, srv.URL, "stats", srv.Token(t, tc.topic, tc.scopes...), nil)
			var ae *client.AccessError
			if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
				t.Fatalf("access: %v, want 403", err)
			}
		})
	}
}

// TestPractableCoalesceFlag: --coalesce (server.Config.Coalesce) marks the
// readers of matching topics for practable/relay's merging (the contract
// itself, with a host that drops what arrives while it is busy, is pinned in
// internal/relay's TestPractableBusyHostGetsEveryCommandWhenCoalesced): a
// reader of a matching topic coalesces, others and the server's own topics
// never do, and a burst of commands reaches the reader intact and in order
// however it was merged.
func TestPractableCoalesceFlag(t *testing.T) {
	srv := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.Coalesce = []string{"expt00/*", "*"}
		c.PractableStats = auth.ScopeRead
	})
	host := practableDial(t, srv.URL, "expt00/control", srv.Token(t, "expt00/control", "read", "write"), "")
	other := srv.Dial(t, "lab/data", "read")
	stats := srv.Dial(t, "stats", auth.ScopeStats)
	feed := practableDial(t, srv.URL, "stats", srv.Token(t, "stats", "read"), "")
	_, _, _ = other, stats, feed
	user := practableDial(t, srv.URL, "expt00/control", srv.Token(t, "expt00/control", "write"), "")
	wait.For(t, "five connections", func() bool { return len(srv.Relay().Connections()) == 5 })
	for _, cs := range srv.Relay().Connections() {
		want := cs.Info.Topic == "expt00/control" || cs.Info.Topic == "lab/data"
		if cs.Info.Coalesce != want {
			t.Fatalf("connection on %s: Coalesce %v, want %v", cs.Info.Topic, cs.Info.Coalesce, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var want strings.Builder
	for i := range 100 {
		cmd := fmt.Sprintf("set %d\n", i)
		want.WriteString(cmd)
		if err := user.Write(ctx, websocket.MessageText, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
	}
	var got strings.Builder
	frames := 0
	for got.Len() < want.Len() {
		_, b, err := host.Read(ctx)
		if err != nil {
			t.Fatalf("after %d bytes: %v", got.Len(), err)
		}
		got.Write(b)
		frames++
	}
	if got.String() != want.String() {
		t.Fatalf("the host got %q, want %q", got.String(), want.String())
	}
	st := srv.Relay().Stats()
	if saved := st.CoalescedMessages - st.CoalescedFrames; int(saved) != 100-frames {
		t.Fatalf("100 messages in %d frames, but the counters say %d merged into %d", frames, st.CoalescedMessages, st.CoalescedFrames)
	}
}

// TestSwitchboardHostKeepsEveryCommand: `switchboard host` (a tcp stream)
// is the fix recommended instead of coalescing: every command a user sends
// back to back reaches the experiment, 10 of 10 and 1000 of 1000, each
// intact and in order, with no coalescing on the topic.
func TestSwitchboardHostKeepsEveryCommand(t *testing.T) {
	srv := servertest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tokenFile := filepath.Join(t.TempDir(), "host.jwt")
	if err := os.WriteFile(tokenFile, []byte(srv.Token(t, "expt01/control", "read", "write")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &agent.Config{URL: srv.URL, TokenFile: tokenFile, Streams: []agent.StreamConfig{
		{Name: "control", Kind: agent.KindTCP, Topic: "expt01/control", Addr: ln.Addr().String()}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var hostLog syncBuffer
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewTextHandler(&hostLog, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	// A failure says what the host saw: its log and its links' counters.
	defer func() {
		if t.Failed() {
			status, _ := json.Marshal(a.Status())
			t.Logf("host status: %s\nhost log:\n%s", status, hostLog.String())
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("host did not stop")
		}
	}()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(15 * time.Second))
	expt, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer expt.Close()
	lines := bufio.NewScanner(expt)

	user := srv.Dial(t, "expt01/control", "read", "write")
	wait.For(t, "host and user on the topic", func() bool { return srv.TopicConns("expt01/control") == 2 })
	wait.For(t, "the host's experiment connection up", func() bool { return hostLocalUp(a, "control") })
	next := 0
	for _, n := range []int{10, 1000} {
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		for i := range n {
			if err := user.Write(wctx, client.Text, fmt.Appendf(nil, "set %d\n", next+i)); err != nil {
				t.Fatal(err)
			}
		}
		wcancel()
		expt.SetReadDeadline(time.Now().Add(30 * time.Second))
		for i := range n {
			if !lines.Scan() {
				t.Fatalf("after %d of %d commands: %v", i, n, lines.Err())
			}
			if want := fmt.Sprintf("set %d", next+i); lines.Text() != want {
				t.Fatalf("command %d of %d: %q, want %q", i, n, lines.Text(), want)
			}
		}
		next += n
	}
	if st := srv.Relay().Stats(); st.CoalescedFrames != 0 {
		t.Fatalf("%d coalesced frames without --coalesce", st.CoalescedFrames)
	}
	if n := hostDrops(a, "control"); n != 0 {
		t.Fatalf("the host dropped %d messages", n)
	}
}

// hostLocalUp reports whether the host's stream name has its local
// connection up: messages from the relay before that are dropped (and
// counted), so a test sends only once it is.
func hostLocalUp(a *agent.Agent, name string) bool {
	for _, ls := range a.Status() {
		if ls.Name == name && ls.Connected && ls.Local != nil && ls.Local.Connected != nil && *ls.Local.Connected {
			return true
		}
	}
	return false
}

// hostDrops is the messages the host's stream name dropped.
func hostDrops(a *agent.Agent, name string) int64 {
	for _, ls := range a.Status() {
		if ls.Name == name {
			return ls.Drops
		}
	}
	return -1
}

// practableError is practable's Error model as practable/book's go-swagger
// client decodes it (internal/ac/models.Error: both members required).
type practableError struct {
	Code    *string `json:"code"`
	Message *string `json:"message"`
}

// TestPractableBidsAnswers pins practable/relay's deny API (api/access.yml)
// as practable/book's deny client uses it: POST /bids/deny?bid=&exp= with a
// bare relay:admin token (no topic or prefix claim) answers 204; GET
// /bids/deny lists {"booking_ids": […]}; errors carry practable's Error
// (top-level code and message) beside ours, 400 for a bad parameter and 401
// without a valid token, as practable answers; a token without the scope
// gets 403 where practable answered 401 (docs/migrating-from-practable.md).
func TestPractableBidsAnswers(t *testing.T) {
	srv := servertest.Start(t)
	admin := srv.Claims("", auth.ScopeAdmin)
	admin.Prefix = ""
	adminToken := srv.Sign(t, admin)
	do := func(method, path, token string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", token) // go-swagger's APIKeyAuth: no "Bearer"
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	future := fmt.Sprint(srv.Clock.Now().Add(time.Hour).Unix())
	past := fmt.Sprint(srv.Clock.Now().Add(-time.Hour).Unix())

	if st, b := do("POST", "/bids/deny?bid=b1&exp="+future, adminToken); st != http.StatusNoContent {
		t.Fatalf("deny: %d %s, want 204", st, b)
	}
	st, b := do("GET", "/bids/deny", adminToken)
	var ids struct {
		BookingIDs []string `json:"booking_ids"`
	}
	if st != http.StatusOK || json.Unmarshal(b, &ids) != nil || !slices.Equal(ids.BookingIDs, []string{"b1"}) {
		t.Fatalf("list denied: %d %s", st, b)
	}
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"exp in the past", "POST", "/bids/deny?bid=b2&exp=" + past, adminToken, http.StatusBadRequest, "invalid_exp"},
		{"bid missing", "POST", "/bids/allow?exp=" + future, adminToken, http.StatusBadRequest, "invalid_bid"},
		{"no token", "POST", "/bids/deny?bid=b2&exp=" + future, "", http.StatusUnauthorized, "missing_token"},
		{"bad token", "GET", "/bids/allow", "not-a-jwt", http.StatusUnauthorized, ""},
		{"no admin scope", "POST", "/bids/deny?bid=b2&exp=" + future, srv.Token(t, "stats", "read"), http.StatusForbidden, "scope_forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := do(tc.method, tc.path, tc.token)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, b)
			}
			var theirs practableError
			if err := json.Unmarshal(b, &theirs); err != nil || theirs.Code == nil || theirs.Message == nil || *theirs.Code == "" || *theirs.Message == "" {
				t.Fatalf("practable's client reads no code and message from %s", b)
			}
			var ours struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(b, &ours); err != nil || ours.Error.Code != *theirs.Code || ours.Error.Message != *theirs.Message {
				t.Fatalf("our error member differs: %s", b)
			}
			if tc.code != "" && *theirs.Code != tc.code {
				t.Fatalf("code %q, want %q", *theirs.Code, tc.code)
			}
		})
	}
}

// startPractableNginx runs deploy/nginx-practable.conf, as shipped but for
// its listen port and upstream address, in front of the node at upstream
// (host:port), listening on port; it is stopped when the test ends.
func startPractableNginx(t *testing.T, port int, upstream string) {
	t.Helper()
	nginx := servertest.Tool(t, "nginx", "nginx")
	shipped, err := os.ReadFile("../../deploy/nginx-practable.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(shipped)
	for _, r := range [][2]string{
		{"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port)},
		{"server 127.0.0.1:8080;", "server " + upstream + ";"},
		{"worker_processes auto;", "worker_processes 1;"},
		{"worker_connections 65536;", "worker_connections 256;"},
	} {
		if strings.Count(conf, r[0]) != 1 {
			t.Fatalf("deploy/nginx-practable.conf: want %q exactly once", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	prefix := t.TempDir()
	if err := os.Mkdir(filepath.Join(prefix, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-p", prefix, "-c", confFile, "-e", filepath.Join(prefix, "logs", "error.log"),
		"-g", "pid " + filepath.Join(prefix, "nginx.pid") + "; daemon off;"}
	if out, err := exec.Command(nginx, append([]string{"-t"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	cmd := exec.Command(nginx, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	wait.For(t, "nginx listening", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestPractableNginxLayout pins practable's production layout as its
// browser apps use it, through a real nginx running the shipped
// deploy/nginx-practable.conf: the app (another origin) sends the CORS
// preflight and then POST /access/session/{topic} with the bare token, gets
// one Access-Control-Allow-Origin (not two), and opens the websocket URI of
// the answer, which is under /access/ and upgraded; a URI under /relay/
// (practable's relay port) works too, and messages flow between the two.
func TestPractableNginxLayout(t *testing.T) {
	const appOrigin = "https://app.example.org"
	port := freePorts(t, 1)[0]
	public := fmt.Sprintf("http://127.0.0.1:%d/access", port)
	srv := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.PublicURL = public
		c.AllowedOrigins = []string{appOrigin}
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	if srv.URL != public {
		t.Fatalf("public URL %s, want %s", srv.URL, public)
	}
	upstream := srv.Addr().String()
	startPractableNginx(t, port, upstream)

	// The preflight of the app's access request.
	req, _ := http.NewRequest(http.MethodOptions, public+"/session/expt00/data", nil)
	req.Header.Set("Origin", appOrigin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 || !slices.Equal(resp.Header.Values("Access-Control-Allow-Origin"), []string{appOrigin}) {
		t.Fatalf("preflight: %s, Access-Control-Allow-Origin %q", resp.Status, resp.Header.Values("Access-Control-Allow-Origin"))
	}

	// The access request and the websocket, as practable's apps make them.
	req, _ = http.NewRequest(http.MethodPost, public+"/session/expt00/data", nil)
	req.Header.Set("Origin", appOrigin)
	req.Header.Set("Authorization", srv.Token(t, "expt00/data", "read", "write"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		URI string `json:"uri"`
	}
	err = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("access: %s %v", resp.Status, err)
	}
	if got := resp.Header.Values("Access-Control-Allow-Origin"); !slices.Equal(got, []string{appOrigin}) {
		t.Fatalf("access answer's Access-Control-Allow-Origin: %q, want it once", got)
	}
	wsPrefix := fmt.Sprintf("ws://127.0.0.1:%d/access/session/expt00/data?code=", port)
	if !strings.HasPrefix(answer.URI, wsPrefix) {
		t.Fatalf("uri %s, want it under %s", answer.URI, wsPrefix)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	origin := http.Header{"Origin": {appOrigin}}
	app, _, err := websocket.Dial(ctx, answer.URI, &websocket.DialOptions{HTTPHeader: origin})
	if err != nil {
		t.Fatalf("websocket through /access/: %v", err)
	}
	defer app.CloseNow()

	// A host whose URI is under /relay/, as practable's access handed out.
	uri, err := client.Access(ctx, public, "expt00/data", srv.Token(t, "expt00/data", "read", "write"), nil)
	if err != nil {
		t.Fatal(err)
	}
	relayURI := strings.Replace(uri, "/access/session/", "/relay/session/", 1)
	host, _, err := websocket.Dial(ctx, relayURI, nil)
	if err != nil {
		t.Fatalf("websocket through /relay/: %v", err)
	}
	defer host.CloseNow()
	wait.For(t, "app and host on the topic", func() bool { return srv.TopicConns("expt00/data") == 2 })
	if err := host.Write(ctx, websocket.MessageBinary, []byte("frame")); err != nil {
		t.Fatal(err)
	}
	if typ, b, err := app.Read(ctx); err != nil || typ != websocket.MessageBinary || string(b) != "frame" {
		t.Fatalf("app read %v %q %v", typ, b, err)
	}
	if err := app.Write(ctx, websocket.MessageText, []byte("set 1\n")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := host.Read(ctx); err != nil || string(b) != "set 1\n" {
		t.Fatalf("host read %q %v", b, err)
	}
	// The client's address is nginx's X-Forwarded-For (--trusted-proxy).
	for _, cs := range srv.Relay().Connections() {
		if !strings.HasPrefix(cs.Info.RemoteAddr, "127.0.0.1") {
			t.Fatalf("remote address %q", cs.Info.RemoteAddr)
		}
	}
}

// TestPractableTenMiBMessages pins practable/relay's message size (its
// websocket read limit is 10 MiB): with --max-message 10MiB, and no
// --send-queue, a 10 MiB message goes from a user to another user, and
// through `switchboard host` to the experiment and back, intact.
func TestPractableTenMiBMessages(t *testing.T) {
	const size = 10 << 20
	srv := servertest.Start(t, func(c *server.Config, _ *server.Deps) { c.Relay.MaxMessageBytes = size })
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a := srv.Dial(t, "lab/files", "read", "write")
	b := srv.Dial(t, "lab/files", "read", "write")
	wait.For(t, "two users on the topic", func() bool { return srv.TopicConns("lab/files") == 2 })
	if err := a.Write(ctx, client.Binary, msg); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := b.Read(ctx); err != nil || typ != client.Binary || !bytes.Equal(got, msg) {
		t.Fatalf("user to user: %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, msg))
	}

	// Through switchboard host, with chunks of the same size.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tokenFile := filepath.Join(t.TempDir(), "host.jwt")
	if err := os.WriteFile(tokenFile, []byte(srv.Token(t, "lab/cam", "read", "write")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &agent.Config{URL: srv.URL, TokenFile: tokenFile, Streams: []agent.StreamConfig{
		{Name: "cam", Kind: agent.KindTCP, Topic: "lab/cam", Addr: ln.Addr().String(), Chunk: size}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(cfg, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(actx) }()
	defer func() {
		acancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("host did not stop")
		}
	}()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(15 * time.Second))
	expt, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer expt.Close()
	user := srv.Dial(t, "lab/cam", "read", "write")
	wait.For(t, "host and user on the topic", func() bool { return srv.TopicConns("lab/cam") == 2 })
	wait.For(t, "the host's experiment connection up", func() bool { return hostLocalUp(ag, "cam") })
	if err := user.Write(ctx, client.Binary, msg); err != nil {
		t.Fatal(err)
	}
	expt.SetDeadline(time.Now().Add(60 * time.Second))
	got := make([]byte, size)
	if _, err := io.ReadFull(expt, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("user to experiment: %v, equal %v", err, bytes.Equal(got, msg))
	}
	go expt.Write(msg)
	var back []byte
	for len(back) < size {
		_, m, err := user.Read(ctx)
		if err != nil {
			t.Fatalf("experiment to user after %d bytes: %v", len(back), err)
		}
		back = append(back, m...)
	}
	if !bytes.Equal(back, msg) {
		t.Fatal("experiment to user: bytes differ")
	}
	if st := srv.Relay().Stats(); st.Closes[relay.ReasonTooBig.String()] != 0 {
		t.Fatalf("closes for size: %v", st.Closes)
	}
}

// TestPractableHostDataPath pins the data path of practable's hosts (its
// `relay host` pushing MPEG-TS from ffmpeg, or data from an experiment):
// the host opens its session with the bare token and no Origin, writes
// binary messages of any size, and every reader gets each one whole, with
// its boundaries, in order; nothing is echoed to the host.
func TestPractableHostDataPath(t *testing.T) {
	srv := servertest.Start(t)
	host := practableDial(t, srv.URL, "expt00-st-video", srv.Token(t, "expt00-st-video", "read", "write"), "")
	var readers []*websocket.Conn
	for range 3 {
		readers = append(readers, practableDial(t, srv.URL, "expt00-st-video", srv.Token(t, "expt00-st-video", "read"), ""))
	}
	wait.For(t, "host and readers on the topic", func() bool { return srv.TopicConns("expt00-st-video") == 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sent [][]byte
	for i := range 100 {
		frame := bytes.Repeat([]byte{0x47, byte(i)}, 94*(1+i%20)) // whole 188-byte TS packets
		sent = append(sent, frame)
		if err := host.Write(ctx, websocket.MessageBinary, frame); err != nil {
			t.Fatal(err)
		}
	}
	for r, c := range readers {
		for i, want := range sent {
			typ, got, err := c.Read(ctx)
			if err != nil || typ != websocket.MessageBinary || !bytes.Equal(got, want) {
				t.Fatalf("reader %d, message %d: %v %d bytes (want %d), %v", r, i, typ, len(got), len(want), err)
			}
		}
	}
	// An echo would have been queued for the host before the readers'
	// copies were written: it would be queued, in flight or written now.
	for _, cs := range srv.Relay().Connections() {
		if cs.Info.CanWrite && (cs.MessagesOut != 0 || cs.QueuedBytes != 0) {
			t.Fatalf("the host was sent %d messages (%d bytes queued): its own came back", cs.MessagesOut, cs.QueuedBytes)
		}
	}
}
