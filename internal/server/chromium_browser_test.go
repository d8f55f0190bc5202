package server

// The harness of the real-browser tests (dashboard_browser_test.go): a
// headless Chromium driven with chromedp, one per test, and a fresh browser
// context (its own cookies) per tab; the browser console of every tab,
// checked for errors when the test ends; a screenshot, the page and the
// console saved when a test fails; a mock OpenID Connect provider
// (mockoidc) in the test process; and the real `switchboard` command built
// for tests that run it as a child process.
//
// A missing Chromium skips these tests, unless SWITCHBOARD_TEST_STRICT=1,
// which makes them fail instead (as internal/store/pgtest does for
// PostgreSQL).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/switchboard-hub/switchboard/internal/web"
)

// Environment variables of the browser tests.
const (
	envStrict    = "SWITCHBOARD_TEST_STRICT"    // "1": a missing Chromium fails the tests instead of skipping them
	envArtifacts = "SWITCHBOARD_TEST_ARTIFACTS" // where failing tests leave screenshots and console logs (without go test -artifacts)
)

// Bounds of the browser tests' steps. Every wait has one; nothing sleeps.
const (
	browserStart = 30 * time.Second // launching Chromium
	stepTimeout  = 10 * time.Second // one navigation, click or wait
	// outcomeTimeout bounds the wait for an outcome whose time the test
	// measures and judges on its own (10,000 rows on screen): generous, so
	// a busy machine makes the test report a slow page, not a missing one.
	outcomeTimeout = 2 * time.Minute
)

// chromiumPath finds Debian's Chromium: chromium, else chromium-browser.
// Missing, the test is skipped, or fails under SWITCHBOARD_TEST_STRICT=1.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium not found in PATH (apt-get install chromium)"
	if os.Getenv(envStrict) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (set " + envStrict + "=1 to fail instead)")
	return ""
}

// startBrowser launches a headless Chromium for this test and returns the
// context of its first tab: tabs made from it (newTab) share the browser.
// The browser ends with the test, before the servers started earlier.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.WindowSize(1280, 900),
	)
	// Chromium now and then crashes while starting on a loaded machine
	// ("chrome failed to start", seen once in CI): a few attempts.
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(allocCtx)
		// The first Do starts the browser and binds it to ctx (not to a
		// timeout's context, which would end the browser with the
		// timeout): bound it from here instead.
		started := make(chan error, 1)
		go func() { started <- chromedp.Do(ctx) }()
		select {
		case err := <-started:
			if err == nil {
				t.Cleanup(func() {
					cancel()
					cancelAlloc()
				})
				return ctx
			}
			lastErr = err
			t.Logf("start chromium (%s), attempt %d: %v", exe, attempt, err)
		case <-time.After(browserStart):
			lastErr = fmt.Errorf("did not start within %s", browserStart)
		}
		cancel()
		cancelAlloc()
	}
	t.Fatalf("start chromium (%s): %v", exe, lastErr)
	return nil
}

// consoleEntry is one message of a tab's console.
type consoleEntry struct {
	Time   time.Time
	Kind   string // "console.<type>", "exception" or "log.<source>"
	Level  string // "error", "warning", "info"…
	Text   string
	URL    string
	Source string // the browser log's source ("network", "security"…)
}

func (e consoleEntry) String() string {
	s := fmt.Sprintf("%s %s [%s] %s", e.Time.Format("15:04:05.000"), e.Kind, e.Level, e.Text)
	if e.URL != "" {
		s += " (" + e.URL + ")"
	}
	return s
}

// isError reports whether an entry counts as an error in the browser
// console: console.error and console.assert, an uncaught exception or
// unhandled rejection, and browser log entries of level error.
func (e consoleEntry) isError() bool {
	return e.Level == "error" || e.Kind == "exception"
}

// tab is one browser tab with its own browser context (cookies), its
// console recorded from the start.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context

	perfOnce sync.Once // enables the Performance domain (mainThreadTime)

	mu       sync.Mutex
	console  []consoleEntry   // guarded by mu
	expected []*regexp.Regexp // guarded by mu; network errors the test provokes
}

// newTab opens a tab in a new browser context of the browser. When the
// test ends the tab's console must hold no error (else the test fails),
// and if the test failed its screenshot, page and console are saved.
func newTab(t *testing.T, browser context.Context, name string) *tab {
	t.Helper()
	tb := &tab{t: t, name: name}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext(), chromedp.WithListener(tb.listen))
	tb.ctx = ctx
	t.Cleanup(cancel)
	t.Cleanup(tb.saveIfFailed)
	t.Cleanup(tb.checkConsole)
	// As for the browser: the first Do attaches the tab for the life of
	// the context it is given.
	opened := make(chan error, 1)
	go func() { opened <- chromedp.Do(ctx) }()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("open tab %s: %v", name, err)
		}
	case <-time.After(stepTimeout):
		t.Fatalf("tab %s did not open within %s", name, stepTimeout)
	}
	return tb
}

// listen records console messages, exceptions and browser log entries. It
// runs in the tab's event loop: it only appends.
func (tb *tab) listen(ev any) {
	var e consoleEntry
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		parts := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			switch {
			case a.Type == runtime.RemoteObjectTypeString && len(a.Value) > 0:
				var s string
				if err := json.Unmarshal(a.Value, &s); err == nil {
					parts = append(parts, s)
					continue
				}
				parts = append(parts, string(a.Value))
			case len(a.Value) > 0:
				parts = append(parts, string(a.Value))
			case a.UnserializableValue != "":
				parts = append(parts, string(a.UnserializableValue))
			default:
				parts = append(parts, a.Description)
			}
		}
		level := string(ev.Type)
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			level = "error"
		}
		e = consoleEntry{Kind: "console." + string(ev.Type), Level: level, Text: strings.Join(parts, " ")}
		if ev.StackTrace != nil && len(ev.StackTrace.CallFrames) > 0 {
			e.URL = ev.StackTrace.CallFrames[0].URL
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		e = consoleEntry{Kind: "exception", Level: "error", Text: d.Text, URL: d.URL}
		if d.Exception != nil && d.Exception.Description != "" {
			e.Text += " " + d.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		en := ev.Entry
		e = consoleEntry{Kind: "log." + string(en.Source), Level: string(en.Level), Text: en.Text, URL: en.URL, Source: string(en.Source)}
	default:
		return
	}
	e.Time = time.Now()
	tb.mu.Lock()
	tb.console = append(tb.console, e)
	tb.mu.Unlock()
}

// expectNetworkError tolerates the browser's own log entry for a failed
// request whose URL matches pattern ("Failed to load resource: the server
// responded with a status of 403"): the request the test makes to be
// refused. Errors of the page's scripts are never tolerated.
func (tb *tab) expectNetworkError(pattern string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.expected = append(tb.expected, regexp.MustCompile(pattern))
}

// consoleErrors returns the console's errors that the test did not expect.
func (tb *tab) consoleErrors() []consoleEntry {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []consoleEntry
	for _, e := range tb.console {
		if !e.isError() {
			continue
		}
		expected := false
		if e.Source == "network" {
			for _, re := range tb.expected {
				if re.MatchString(e.URL) {
					expected = true
				}
			}
		}
		if !expected {
			out = append(out, e)
		}
	}
	return out
}

// checkConsole fails the test if the console holds an unexpected error.
func (tb *tab) checkConsole() {
	for _, e := range tb.consoleErrors() {
		tb.t.Errorf("tab %s: browser console error: %s", tb.name, e)
	}
}

// artifactDir is where a failing test leaves its files: the test's
// artifact directory under go test -artifacts (t.ArtifactDir), else
// $SWITCHBOARD_TEST_ARTIFACTS/<test> when CI names a directory, else a
// directory of the test's own that is removed when the test ends (never a
// fixed path that runs would share). kept reports whether the files
// outlive the test.
func artifactDir(t *testing.T) (dir string, kept bool, err error) {
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return t.ArtifactDir(), true, nil
	}
	base := os.Getenv(envArtifacts)
	if base == "" {
		return t.ArtifactDir(), false, nil
	}
	dir = filepath.Join(base, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	return dir, true, os.MkdirAll(dir, 0o755)
}

// saveIfFailed saves the tab's screenshot, page and console when the test
// has failed, and prints where.
func (tb *tab) saveIfFailed() {
	t := tb.t
	if !t.Failed() {
		return
	}
	dir, kept, err := artifactDir(t)
	if err != nil {
		t.Logf("tab %s: no artifact directory: %v", tb.name, err)
		return
	}
	if !kept {
		t.Logf("tab %s: the screenshot, page and console below are removed when the test ends: "+
			"run go test -artifacts, or set %s to a directory, to keep them", tb.name, envArtifacts)
	}
	prefix := filepath.Join(dir, tb.name)
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err == nil {
		t.Logf("tab %s: at %s", tb.name, loc)
	}
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Logf("tab %s: screenshot: %v", tb.name, err)
	} else if err := os.WriteFile(prefix+"-screenshot.png", png, 0o644); err == nil {
		t.Logf("tab %s: screenshot saved to %s", tb.name, prefix+"-screenshot.png")
	}
	if html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`)); err == nil {
		if err := os.WriteFile(prefix+"-page.html", []byte(html), 0o644); err == nil {
			t.Logf("tab %s: page saved to %s", tb.name, prefix+"-page.html")
		}
	}
	tb.mu.Lock()
	var b strings.Builder
	for _, e := range tb.console {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	tb.mu.Unlock()
	if err := os.WriteFile(prefix+"-console.log", []byte(b.String()), 0o644); err == nil {
		t.Logf("tab %s: console log saved to %s", tb.name, prefix+"-console.log")
	}
}

// run runs actions in the tab within stepTimeout, failing the test with
// what for an error.
func (tb *tab) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	tb.runFor(stepTimeout, what, steps...)
}

func (tb *tab) runFor(d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("tab %s: %s: %v", tb.name, what, err)
	}
}

// clickAndLoad clicks the element sel finds and waits for the page the
// click leads to to load.
func (tb *tab) clickAndLoad(what, sel string) {
	tb.t.Helper()
	tb.doAndLoad(what, chromedp.Click(chromedp.CSS(sel)))
}

// doAndLoad runs an action that leads to another page (a click, a key) and
// waits for that page to load (after any redirects).
func (tb *tab) doAndLoad(what string, a chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, a)); err != nil {
		tb.t.Fatalf("tab %s: %s: %v", tb.name, what, err)
	}
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into T.
func eval[T any](tb *tab, what, js string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("tab %s: %s: %v", tb.name, what, err)
	}
	return v
}

// waitJS waits, checking on every animation frame, until the expression is
// truthy, within d.
func (tb *tab) waitJS(d time.Duration, what, js string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d+time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(d))); err != nil {
		tb.t.Fatalf("tab %s: waiting for %s: %v", tb.name, what, err)
	}
}

// pollJS waits, checking on every animation frame (just before the frame
// is painted), until the expression is truthy, within d, and returns its
// value.
func pollJS[T any](tb *tab, d time.Duration, what, js string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d+time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[T](js, chromedp.WithPollingTimeout(d)))
	if err != nil {
		tb.t.Fatalf("tab %s: waiting for %s: %v", tb.name, what, err)
	}
	return v
}

// mainThreadTime returns the CPU time the tab's renderer main thread has
// used so far (the Performance domain's ThreadTime). Unlike wall time it
// does not grow while the thread waits for a busy machine's CPU, so a
// budget in it judges the page's own work, not the machine's load.
func (tb *tab) mainThreadTime() time.Duration {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	tb.perfOnce.Do(func() {
		if _, err := chromedp.Call(ctx, performance.Enable, performance.EnableParams{TimeDomain: performance.EnableTimeDomainThreadTicks}); err != nil {
			tb.t.Fatalf("tab %s: enable performance metrics: %v", tb.name, err)
		}
	})
	res, err := chromedp.Call(ctx, performance.GetMetrics, cdp.Empty{})
	if err != nil {
		tb.t.Fatalf("tab %s: performance metrics: %v", tb.name, err)
	}
	for _, m := range res.Metrics {
		if m.Name == "ThreadTime" {
			return time.Duration(m.Value * float64(time.Second))
		}
	}
	tb.t.Fatalf("tab %s: no ThreadTime among the performance metrics", tb.name)
	return 0
}

// onNewDocument has every page the tab loads from now on run js before its
// own scripts.
func (tb *tab) onNewDocument(js string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: js}); err != nil {
		tb.t.Fatalf("tab %s: add a script to new documents: %v", tb.name, err)
	}
}

// text returns the text of the first element matching sel, once it is
// there and shown. It asks the page (not chromedp's copy of the DOM, whose
// node ids can be stale just after a navigation).
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	q := fmt.Sprintf(`document.querySelector(%q)`, sel)
	tb.waitJS(stepTimeout, sel, q+` !== null && `+q+`.getClientRects().length > 0`)
	return eval[string](tb, "text of "+sel, q+`.innerText.trim()`)
}

// location returns the tab's URL.
func (tb *tab) location() *url.URL {
	tb.t.Helper()
	loc := eval[string](tb, "location", `location.href`)
	u, err := url.Parse(loc)
	if err != nil {
		tb.t.Fatalf("tab %s: location %q: %v", tb.name, loc, err)
	}
	return u
}

// tid is the CSS selector of a data-testid.
func tid(id string) string { return `[data-testid="` + id + `"]` }

// --- the identity provider ---

// idp is a mock OpenID Connect provider in the test process.
type idp struct {
	m *mockoidc.MockOIDC
}

func startIdP(t *testing.T) *idp {
	t.Helper()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return &idp{m: m}
}

// idpName is the provider's name on the login button.
const idpName = "Test IdP"

// oidcConfig is the dashboard's configuration for the provider: groups
// admins, ops and staff give admin, operator and viewer, and only the
// subjects allowed get in.
func (p *idp) config(allow ...string) *web.OIDCConfig {
	return &web.OIDCConfig{
		Issuer: p.m.Issuer(), ClientID: p.m.ClientID, ClientSecret: p.m.ClientSecret, Name: idpName,
		Scopes:      []string{"groups"},
		AdminGroups: []string{"admins"}, OperatorGroups: []string{"ops"}, ViewerGroups: []string{"staff"},
		AllowSubjects: allow,
	}
}

func oidcUser(sub string, groups ...string) *mockoidc.MockUser {
	return &mockoidc.MockUser{Subject: sub, Email: sub + "@lab.example", EmailVerified: true, PreferredUsername: sub, Groups: groups}
}

// --- the switchboard command ---

// switchboardCommand builds cmd/switchboard into the test's temporary
// directory and returns the executable. It is built with -race when the
// tests run with it, so the build cache (filled by go test) serves every
// package but the command's own: a few seconds.
func switchboardCommand(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build switchboard: %v", err)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "switchboard")
	args := []string{"build", "-o", exe}
	if raceEnabled {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, append(args, "github.com/switchboard-hub/switchboard/cmd/switchboard")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build switchboard: %v\n%s", err, out)
	}
	return exe
}

// childEnv is the environment of child processes: the test's, without
// SWITCHBOARD_* settings.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// --- the server's request log ---

// requestLog records the server's request log lines (logRequests): method,
// path and status of every request, as the server answered them.
type requestLog struct {
	mu      sync.Mutex
	reqs    []loggedRequest
	changed chan struct{} // capacity 1: a request was logged
}

func newRequestLog() *requestLog { return &requestLog{changed: make(chan struct{}, 1)} }

type loggedRequest struct {
	Method, Path string
	Status       int
}

func (l *requestLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *requestLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "request" {
		return nil
	}
	var q loggedRequest
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "method":
			q.Method = a.Value.String()
		case "path":
			q.Path = a.Value.String()
		case "status":
			q.Status = int(a.Value.Int64())
		}
		return true
	})
	l.mu.Lock()
	l.reqs = append(l.reqs, q)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return nil
}

func (l *requestLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *requestLog) WithGroup(string) slog.Handler      { return l }

// find returns the statuses of the requests with this method and path.
func (l *requestLog) find(method, path string) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for _, q := range l.reqs {
		if q.Method == method && q.Path == path {
			out = append(out, q.Status)
		}
	}
	return out
}
