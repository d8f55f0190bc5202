package server

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawExchange writes req on a fresh TCP connection and returns the response.
func rawExchange(t *testing.T, addr, req string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %.40q: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// jsonErrorCode returns the error code of a JSON error body, failing the
// test if body is not one.
func jsonErrorCode(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	var e apiError
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
		t.Fatalf("%d answer is not a JSON error (Content-Type %q): %q", resp.StatusCode, ct, body)
	}
	return e.Error.Code
}

// TestNetHTTPErrorsAreJSON: the answers net/http gives by itself, before any
// handler, are JSON errors like every other answer.
func TestNetHTTPErrorsAreJSON(t *testing.T) {
	s := startServer(t, nil)
	addr := s.Addr().String()
	for _, tc := range []struct {
		name, req string
		status    int
		code      string
	}{
		{"headers too large", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", 431, "headers_too_large"},
		{"garbage request line", "GARBAGE\r\n\r\n", 400, "bad_request"},
		{"no Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"},
		{"unknown transfer coding", "POST /session/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: zip\r\n\r\n", 501, "unsupported_transfer_encoding"},
		{"unknown version", "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 505, "unsupported_http_version"},
	} {
		resp, body := rawExchange(t, addr, tc.req)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d (%q)", tc.name, resp.StatusCode, tc.status, body)
			continue
		}
		if code := jsonErrorCode(t, resp, body); code != tc.code {
			t.Errorf("%s: code %q, want %q", tc.name, code, tc.code)
		}
	}
	// A normal exchange on the same kind of connection is untouched.
	if resp, body := rawExchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); resp.StatusCode != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
}

// TestRouteAnswersAreJSON: OPTIONS on API paths, a connection type without a
// topic and a non-GET on a path ServeMux would redirect get JSON answers.
func TestRouteAnswersAreJSON(t *testing.T) {
	s := startServer(t, nil)
	req := func(method, path string) (*http.Response, []byte) {
		r, _ := http.NewRequest(method, s.url+path, nil)
		resp, err := noRedirect.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := req("OPTIONS", "/api/v1/revocations")
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Allow"), "POST") || !strings.Contains(resp.Header.Get("Allow"), "OPTIONS") {
		t.Fatalf("OPTIONS /api/v1/revocations: %d Allow %q %q", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	resp, body = req("OPTIONS", "/api/v1/nothing-here")
	if resp.StatusCode != 404 || jsonErrorCode(t, resp, body) != "not_found" {
		t.Fatalf("OPTIONS on an unknown path: %d %q", resp.StatusCode, body)
	}
	for _, p := range []string{"/session", "/session/", "/shell", "/agent"} {
		resp, body = req("POST", p)
		if resp.StatusCode != 400 || jsonErrorCode(t, resp, body) != "invalid_topic" {
			t.Errorf("POST %s: %d %q", p, resp.StatusCode, body)
		}
	}
	resp, body = req("OPTIONS", "/jobs")
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		t.Errorf("OPTIONS /jobs: redirect %d", resp.StatusCode)
	}
	resp, body = req("DELETE", "/jobs")
	if resp.StatusCode >= 300 && resp.StatusCode < 400 || resp.StatusCode >= 400 && jsonErrorCode(t, resp, body) == "" {
		t.Errorf("DELETE /jobs: %d %q", resp.StatusCode, body)
	}
}

// TestOriginSchemeMustMatch: a page on the same host but another scheme is
// another origin, and may not use the relay.
func TestOriginSchemeMustMatch(t *testing.T) {
	s := startServer(t, nil)
	host := strings.TrimPrefix(s.url, "http://")
	try := func(origin string) (int, string) {
		r, _ := http.NewRequest("POST", s.url+"/session/x", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Authorization", "Bearer "+s.token("x", "read"))
		status, code, _ := do(t, r)
		return status, code
	}
	if status, code := try("https://" + host); status != http.StatusForbidden || code != "origin_forbidden" {
		t.Fatalf("https page of an http server's host: %d %s", status, code)
	}
	if status, _ := try("http://" + host); status != http.StatusOK {
		t.Fatalf("same origin: %d", status)
	}
}
