package main

import (
	"context"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/datadir"
)

// TestHealthcheckProbeURL: the probe follows serve's --listen (a wildcard
// address on loopback), or --url; bad addresses are refused by name.
func TestHealthcheckProbeURL(t *testing.T) {
	for _, c := range []struct {
		listen, url, path, want, err string
	}{
		{listen: "127.0.0.1:8080", path: "/healthz", want: "http://127.0.0.1:8080/healthz"},
		{listen: "0.0.0.0:8080", path: "/healthz", want: "http://127.0.0.1:8080/healthz"},
		{listen: ":9000", path: "/readyz", want: "http://127.0.0.1:9000/readyz"},
		{listen: "[::]:8080", path: "/healthz", want: "http://[::1]:8080/healthz"},
		{listen: "relay.internal:8080", path: "/healthz", want: "http://relay.internal:8080/healthz"},
		{listen: "ignored:1", url: "https://127.0.0.1:8443/", path: "/healthz", want: "https://127.0.0.1:8443/healthz"},
		{listen: "8080", path: "/healthz", err: "--listen"},
		{listen: "127.0.0.1:8080", url: "ftp://x", path: "/healthz", err: "--url"},
	} {
		f := healthcheckFlags{listen: c.listen, url: c.url, path: c.path}
		got, err := f.probeURL()
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("listen %q url %q: error %v, want one naming %s", c.listen, c.url, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("listen %q url %q: %q %v, want %q", c.listen, c.url, got, err, c.want)
		}
	}
}

// TestHealthcheckAgainstServe: `switchboard healthcheck` passes against a
// running serve on the same --listen, for /healthz and /readyz, and exits
// 1 for a path that is not 200.
func TestHealthcheckAgainstServe(t *testing.T) {
	dir := startServe(t)
	u, err := datadir.ReadPublicURL(dir)
	if err != nil {
		t.Fatal(err)
	}
	listen := strings.TrimPrefix(u, "http://")
	for _, path := range []string{"/healthz", "/readyz"} {
		if out, err := run(context.Background(), nil, "healthcheck", "--listen", listen, "--path", path); err != nil || !strings.Contains(out, path) {
			t.Errorf("healthcheck %s: %q %v", path, out, err)
		}
	}
	_, err = run(context.Background(), nil, "healthcheck", "--listen", listen, "--path", "/no-such-page")
	if ee, ok := err.(*exitError); !ok || ee.code != 1 || !strings.Contains(ee.msg, "404") {
		t.Errorf("healthcheck of a 404: %v, want exit status 1 naming 404", err)
	}
}
