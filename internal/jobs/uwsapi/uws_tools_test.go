package uwsapi

// Helpers for tests that need external tools (xmllint, python3 with
// pyvo). As in internal/store/pgtest: a missing tool skips the test,
// unless SWITCHBOARD_TEST_STRICT=1, which makes it fail instead.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// envStrict is the variable that turns a missing tool into a failure (the
// same as pgtest.EnvStrict).
const envStrict = "SWITCHBOARD_TEST_STRICT"

// errToolMissing marks errors that skip a test unless strict.
var errToolMissing = errors.New("test tool missing")

// skipOrFatal skips the test for a missing tool (errToolMissing), unless
// strict; any other error fails it.
func skipOrFatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errToolMissing) && os.Getenv(envStrict) != "1" {
		t.Skip(err.Error() + " (set " + envStrict + "=1 to fail instead)")
	}
	t.Fatal(err)
}

// moduleRoot is the directory holding go.mod: from this file's path, else
// from `go env GOMOD`.
func moduleRoot(t testing.TB) string {
	t.Helper()
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..", "..")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside a module")
	}
	return filepath.Dir(gomod)
}

// uwsSchema is the UWS 1.1 schema, in ../shared beside the module.
func uwsSchema(t testing.TB) string {
	t.Helper()
	p := filepath.Join(moduleRoot(t), "..", "shared", "specs", "uws", "UWS-1.1.xsd")
	if _, err := os.Stat(p); err != nil {
		skipOrFatal(t, errors.Join(errToolMissing, err))
	}
	return p
}

// xmllintPath finds xmllint or skips/fails.
func xmllintPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("xmllint")
	if err != nil {
		skipOrFatal(t, errors.Join(errToolMissing, errors.New("xmllint not found (Debian: libxml2-utils)")))
	}
	return p
}

// validateUWS writes doc to a temporary file and validates it against the
// UWS schema with xmllint; it fails the test if it does not validate.
func validateUWS(t *testing.T, name string, doc []byte) {
	t.Helper()
	lint := xmllintPath(t)
	schema := uwsSchema(t)
	f := filepath.Join(t.TempDir(), name+".xml")
	if err := os.WriteFile(f, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(lint, "--noout", "--nonet", "--schema", schema, f).CombinedOutput()
	if err != nil {
		t.Errorf("%s does not validate against UWS-1.1.xsd: %v\n%s\ndocument:\n%s", name, err, out, doc)
	}
}

var pyvoPython struct {
	once sync.Once
	path string
	err  error
}

// pythonWithPyvo returns a python interpreter that can import pyvo:
// /usr/bin/python3 first, then python3 on PATH; or skips/fails.
func pythonWithPyvo(t testing.TB) string {
	t.Helper()
	pyvoPython.once.Do(func() {
		candidates := []string{"/usr/bin/python3"}
		if p, err := exec.LookPath("python3"); err == nil {
			candidates = append(candidates, p)
		}
		var tried []string
		for _, c := range candidates {
			var stderr bytes.Buffer
			cmd := exec.Command(c, "-c", "import pyvo.io.uws")
			cmd.Stderr = &stderr
			if err := cmd.Run(); err == nil {
				pyvoPython.path = c
				return
			}
			tried = append(tried, c+": "+strings.TrimSpace(lastLine(stderr.String())))
		}
		pyvoPython.err = errors.Join(errToolMissing,
			errors.New("no python3 can import pyvo (Debian: python3-pyvo); tried "+strings.Join(tried, "; ")))
	})
	if pyvoPython.err != nil {
		skipOrFatal(t, pyvoPython.err)
	}
	return pyvoPython.path
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
