package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// TestShippedFrontEndConfigsAreValid: the load balancer configurations in
// deploy/ are accepted by the programs they are for (`haproxy -c`,
// `nginx -t`), exactly as shipped.
func TestShippedFrontEndConfigsAreValid(t *testing.T) {
	deploy, err := filepath.Abs("../../deploy")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("haproxy", func(t *testing.T) {
		haproxy := servertest.Tool(t, "haproxy", "haproxy")
		out, err := exec.Command(haproxy, "-c", "-f", filepath.Join(deploy, "haproxy.cfg")).CombinedOutput()
		if err != nil {
			t.Fatalf("haproxy -c: %v\n%s", err, out)
		}
	})
	t.Run("nginx", func(t *testing.T) {
		nginx := servertest.Tool(t, "nginx", "nginx")
		// Its pid file and logs go to a directory of the test's, so that
		// the check needs no root and touches nothing of the system's.
		prefix := t.TempDir()
		if err := os.Mkdir(filepath.Join(prefix, "logs"), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(nginx, "-t", "-p", prefix, "-c", filepath.Join(deploy, "nginx.conf"),
			"-e", filepath.Join(prefix, "logs", "error.log"),
			"-g", "pid "+filepath.Join(prefix, "nginx.pid")+";").CombinedOutput()
		if err != nil {
			t.Fatalf("nginx -t: %v\n%s", err, out)
		}
	})
}
