package apispectest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// recordingTB keeps what the validator reports instead of failing.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) reports() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// TestValidatorCatchesDrift: answers and requests that the description
// does not allow are reported, and those it allows are not.
func TestValidatorCatchesDrift(t *testing.T) {
	jsonAnswer := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	const apiErr = `{"error":{"code":"bad","message":"bad request"}}`
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		answer       http.HandlerFunc
		want         string // "" for no report
	}{
		{"healthz as described", "GET", "/healthz", "", jsonAnswer(200, `{"status":"ok","node":"n1","version":"dev"}`), ""},
		{"healthz without its version", "GET", "/healthz", "", jsonAnswer(200, `{"status":"ok","node":"n1"}`), "does not match the description"},
		{"an undescribed route answering 200", "GET", "/nowhere", "", jsonAnswer(200, `{}`), "no such operation"},
		{"an unknown path refused with a JSON error", "DELETE", "/nowhere", "", jsonAnswer(404, `{"error":{"code":"not_found","message":"no such endpoint"}}`), ""},
		{"an error that is not the Error shape", "DELETE", "/nowhere", "", jsonAnswer(404, `{"message":"no"}`), "not the Error schema"},
		{"a body the description refuses, accepted", "POST", "/api/v1/tokens", `[1]`, jsonAnswer(200, `{"token":"t","expires_at":"2026-12-03T00:00:00Z"}`), "request the description refuses"},
		{"a body the description refuses, refused", "POST", "/api/v1/tokens", `[1]`, jsonAnswer(400, apiErr), ""},
		{"an unlisted success status", "POST", "/api/v1/tokens", `{"scopes":["read"]}`, jsonAnswer(201, `{"token":"t","expires_at":"2026-12-03T00:00:00Z"}`), "not among the operation's responses"},
		{"a topic of several segments", "POST", "/session/expt42/video0", "", jsonAnswer(200, `{"uri":"wss://x/session/expt42/video0?code=a.n1"}`), ""},
		{"the access answer without its uri", "POST", "/session/expt42/video0", "", jsonAnswer(200, `{"url":"wss://x"}`), "does not match the description"},
		{"a dashboard page (undescribed on purpose)", "GET", "/ui/connections", "", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := &recordingTB{TB: t}
			v := New(rt)
			srv := httptest.NewServer(v.Middleware(tc.answer))
			defer srv.Close()
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			srv.Close() // the handler, and so the check, has returned
			got := rt.reports()
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("reported %q", got)
			case tc.want != "" && (len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), tc.want)):
				t.Errorf("reported %q, want a report saying %q", got, tc.want)
			}
		})
	}
}
