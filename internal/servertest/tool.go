package servertest

import (
	"os"
	"os/exec"
	"testing"
)

// EnvStrict names the variable that, set to "1" (as CI does), makes a
// missing tool fail the test instead of skipping it.
const EnvStrict = "SWITCHBOARD_TEST_STRICT"

// Tool returns the path of the first of names found in PATH or in the
// system directories (/usr/sbin, /sbin: haproxy and nginx live there and a
// user's PATH often lacks them). Missing, the test is skipped with how to
// install it (Debian package debianPackage), or fails under EnvStrict=1.
func Tool(t testing.TB, debianPackage string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if p := dir + "/" + name; isExecutable(p) {
				return p
			}
		}
	}
	msg := names[0] + " not found (apt-get install " + debianPackage + ")"
	if os.Getenv(EnvStrict) == "1" {
		t.Fatal(msg + "; " + EnvStrict + "=1 forbids skipping")
	}
	t.Skip(msg + " (set " + EnvStrict + "=1 to fail instead)")
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
