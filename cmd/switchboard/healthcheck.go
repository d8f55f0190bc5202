package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthcheckFlags say which node to probe: by default the one that
// `serve` with the same --listen (or SWITCHBOARD_LISTEN) runs.
type healthcheckFlags struct {
	listen  string
	url     string
	path    string
	timeout time.Duration
}

// defaultHealthPath is what a container runtime and systemd probe: the
// process answers HTTP (liveness). /readyz is for load balancers.
const defaultHealthPath = "/healthz"

func newHealthcheckCommand(io stdio) *cobra.Command {
	var f healthcheckFlags
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Probe a running node's /healthz (exit 0 when it answers 200)",
		Long: `Probe a running node over HTTP and exit 0 if it answers 200, 1 otherwise.

Made for container images without curl (the Dockerfile's HEALTHCHECK): it
reads the same --listen as serve, so SWITCHBOARD_LISTEN set for serve also
points the probe at it (a wildcard address such as 0.0.0.0 is probed on
loopback). A node serving HTTPS is probed with --url https://…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHealthcheck(cmd.Context(), io, &f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address the node listens on (serve's --listen)")
	fs.StringVar(&f.url, "url", "", "base URL to probe instead of http://<listen> (e.g. https://127.0.0.1:8443)")
	fs.StringVar(&f.path, "path", defaultHealthPath, "path to probe: /healthz (alive) or /readyz (ready for clients)")
	fs.DurationVar(&f.timeout, "timeout", 3*time.Second, "bound on the whole probe")
	return cmd
}

// probeURL returns the URL the flags name.
func (f *healthcheckFlags) probeURL() (string, error) {
	base := f.url
	if base == "" {
		host, port, err := net.SplitHostPort(f.listen)
		if err != nil {
			return "", fmt.Errorf("--listen %q: %w", f.listen, err)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
			if ip != nil && ip.To4() == nil {
				host = "::1"
			}
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--url %q: want http://HOST:PORT or https://HOST:PORT", base)
	}
	return u.JoinPath(f.path).String(), nil
}

func runHealthcheck(ctx context.Context, io stdio, f *healthcheckFlags) error {
	target, err := f.probeURL()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	// Its own client: no proxy from the environment (a probe of loopback
	// must not go through HTTP_PROXY), no connection kept.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("healthcheck %s: %v", target, err)}
	}
	defer resp.Body.Close()
	body, _ := readLimited(resp.Body, 512)
	body = strings.TrimSpace(body)
	if resp.StatusCode != http.StatusOK {
		return &exitError{code: 1, msg: fmt.Sprintf("healthcheck %s: %s %s", target, resp.Status, body)}
	}
	_, err = fmt.Fprintf(io.out, "%s: %s\n", target, body)
	return err
}

// readLimited reads at most n bytes of r, for a message.
func readLimited(r io.Reader, n int64) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, n))
	return string(b), err
}
