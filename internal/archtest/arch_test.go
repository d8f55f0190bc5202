package archtest

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Name       string
	Doc        string
	Standard   bool
	Imports    []string
	Deps       []string
}

func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	args := append([]string{"list", "-json=ImportPath,Name,Doc,Standard,Imports,Deps"}, patterns...)
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// isStd reports whether an import path is in the standard library (no dot
// in the first element, and not this module).
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".") && first != "switchboard"
}

// TestRelayCoreImportsOnlyStdlib: the relay core knows nothing of HTTP,
// storage, clustering or any third-party code.
func TestRelayCoreImportsOnlyStdlib(t *testing.T) {
	p := list(t, "switchboard/internal/relay")[0]
	for _, d := range p.Deps {
		if !isStd(d) {
			t.Errorf("internal/relay depends on %s; it may use the standard library only", d)
		}
	}
	for _, banned := range []string{"net/http", "database/sql", "net"} {
		for _, d := range p.Deps {
			if d == banned {
				t.Errorf("internal/relay depends on %s: the core must not do I/O of its own", banned)
			}
		}
	}
}

// allowed lists, per package, the module packages and third-party module
// prefixes it may import directly (DESIGN.md §4). The standard library is
// always allowed. A package missing here fails the test, so a new package
// has to state its place.
var allowed = map[string][]string{
	"switchboard/internal/topic":    {},
	"switchboard/internal/relay":    {},
	"switchboard/internal/apierr":   {},
	"switchboard/internal/datadir":  {},
	"switchboard/internal/archtest": {},
	"switchboard/pkg/wire":          {}, // the wire contract: standard library only
	"switchboard/internal/auth":     {"switchboard/internal/topic", "switchboard/pkg/wire", "github.com/golang-jwt/jwt/v5"},
	"switchboard/internal/wsconn":   {"switchboard/internal/relay", "github.com/coder/websocket"},
	"switchboard/internal/sseconn":  {"switchboard/internal/relay"}, // server-sent events: a read-only relay.Conn over net/http
	"switchboard/internal/access": {"switchboard/internal/auth", "switchboard/internal/relay", "switchboard/internal/topic",
		"switchboard/internal/apierr", "switchboard/internal/wsconn", "switchboard/internal/sseconn", "switchboard/pkg/wire"},
	"switchboard/internal/shell": {"switchboard/internal/access", "switchboard/internal/relay", "switchboard/internal/auth",
		"switchboard/internal/apierr", "switchboard/pkg/wire"}, // 1:1 sessions, an access endpoint
	"switchboard/internal/control": {"switchboard/internal/access", "switchboard/internal/apierr", "switchboard/internal/auth",
		"switchboard/internal/relay", "switchboard/internal/store", "switchboard/internal/topic", "switchboard/pkg/wire",
		"switchboard/internal/jobproto", // agent enrolment: the agent id and label grammar
		"switchboard/internal/cluster",  // revocations: record, publish on the bus, enforce on every node
		"github.com/golang-jwt/jwt/v5", "github.com/prometheus/client_golang/"},
	"switchboard/internal/server": {"switchboard/internal/", "switchboard/pkg/wire"},
	"switchboard/pkg/client":      {"switchboard/pkg/wire", "github.com/coder/websocket"}, // never internal/…
	"switchboard/internal/bench": {"switchboard/internal/jobproto", "switchboard/pkg/client", "switchboard/pkg/wire", "switchboard/internal/auth", "switchboard/internal/datadir",
		"switchboard/internal/store/pgtemp", // bench cluster: a throwaway PostgreSQL without --database-url
		"github.com/coder/websocket"},       // bench access --baseline: a bare websocket upgrade, the machine's floor
	"switchboard/internal/agent": {"switchboard/internal/jobproto", "switchboard/pkg/client", "switchboard/pkg/wire", "switchboard/internal/auth", "switchboard/internal/topic", "switchboard/internal/apierr",
		"go.yaml.in/yaml/v3", "github.com/coder/websocket"},
	"switchboard/cmd/switchboard": {"switchboard/", "github.com/"},
	"switchboard/internal/store":  {},
	"switchboard/internal/store/sqlite": {"switchboard/internal/store", "switchboard/internal/store/jobcodec", "modernc.org/sqlite", "modernc.org/sqlite/lib",
		"github.com/pressly/goose/v3"},
	"switchboard/internal/store/postgres": {"switchboard/internal/store", "switchboard/internal/store/jobcodec", "github.com/jackc/pgx/v5/", "github.com/jackc/pgx/v5",
		"github.com/pressly/goose/v3", "switchboard/internal/blob"}, // blob: result files shared by a cluster (Store.Blobs)
	"switchboard/internal/store/storetest": {"switchboard/internal/store", "switchboard/internal/servertest/wait"},
	"switchboard/internal/store/jobcodec":  {"switchboard/internal/store"},
	"switchboard/internal/store/pgtest":    {"github.com/jackc/pgx/v5", "switchboard/internal/store/pgtemp"},
	"switchboard/internal/store/pgtemp":    {}, // a throwaway PostgreSQL (initdb, pg_ctl): for pgtest and bench cluster
	"switchboard/internal/store/storeload": {"switchboard/internal/store"},
	"switchboard/internal/playscript":      {},
	"switchboard/internal/jobproto":        {},
	"switchboard/internal/web": {"switchboard/internal/auth", "switchboard/internal/relay", "switchboard/internal/store",
		"switchboard/internal/apierr", "switchboard/internal/topic", "switchboard/pkg/wire", "github.com/coreos/go-oidc/v3/oidc", "golang.org/x/oauth2"},
	"switchboard/internal/blob":          {},                            // result files: standard library only
	"switchboard/internal/blob/blobtest": {"switchboard/internal/blob"}, // every blob.Store's conformance suite
	// The bus and its adapters (relay Peers today); access for its types, later.
	"switchboard/internal/cluster":         {"switchboard/internal/relay", "switchboard/internal/access", "switchboard/pkg/wire"},
	"switchboard/internal/cluster/membus":  {"switchboard/internal/cluster"}, // the in-process bus
	"switchboard/internal/cluster/bustest": {"switchboard/internal/cluster"}, // every Bus's conformance suite
	// The NATS bus: embedded clustered nats-servers or an external NATS.
	"switchboard/internal/cluster/natsbus": {"switchboard/internal/cluster", "github.com/nats-io/nats-server/v2/server", "github.com/nats-io/nats.go"},
	"switchboard/internal/jobs": {"switchboard/internal/jobproto", "switchboard/internal/store", "switchboard/internal/blob",
		"switchboard/internal/relay", "switchboard/internal/topic", // relay for Message and Publisher only: no connection
		"switchboard/internal/cluster"}, // job events between the nodes
	"switchboard/internal/jobs/agentlink": {"switchboard/internal/jobs", "switchboard/internal/access", "switchboard/internal/relay",
		"switchboard/internal/auth", "switchboard/internal/apierr", "switchboard/pkg/wire", "switchboard/internal/jobproto", // the agent channel: an access endpoint and its sessions
		"switchboard/internal/cluster"}, // agents' presence and commands between the nodes
	"switchboard/internal/jobs/uwsapi": {"switchboard/internal/jobs", "switchboard/internal/blob", "switchboard/internal/auth", "switchboard/internal/apierr",
		"switchboard/internal/store", "switchboard/internal/jobproto", "switchboard/pkg/wire"}, // store and jobproto for their types and checks only
	// The one test harness: a whole node, tokens for it, a client to dial it.
	"switchboard/internal/servertest": {"switchboard/internal/server", "switchboard/internal/store/sqlite", "switchboard/internal/auth",
		"switchboard/pkg/client", "switchboard/pkg/wire", "github.com/golang-jwt/jwt/v5",
		"switchboard/internal/servertest/wait", "switchboard/internal/cluster/natsbus", // StartCluster: nodes on embedded NATS
		"switchboard/internal/store/pgtest", "switchboard/internal/store/postgres"}, // and one PostgreSQL
	"switchboard/internal/servertest/wait": {}, // polling with a deadline: standard library only, so every test can use it
}

// isTestSupport reports whether a package exists for tests: it is, or is
// inside, a package whose name ends in "test" (storetest, bustest, pgtest,
// servertest and servertest/wait).
func isTestSupport(path string) bool {
	for elem := range strings.SplitSeq(path, "/") {
		if strings.HasSuffix(elem, "test") {
			return true
		}
	}
	return false
}

// TestTestHarnessOnlyInTests: servertest starts whole nodes with a fixed
// secret; only _test files (which go list leaves out here) and other
// test-support packages may import it.
func TestTestHarnessOnlyInTests(t *testing.T) {
	const harness = "switchboard/internal/servertest"
	for _, p := range list(t, "switchboard/...") {
		for _, imp := range p.Imports {
			if (imp == harness || strings.HasPrefix(imp, harness+"/")) && !isTestSupport(p.ImportPath) {
				t.Errorf("%s imports %s outside its tests", p.ImportPath, imp)
			}
		}
	}
}

func TestImportRules(t *testing.T) {
	for _, p := range list(t, "switchboard/...") {
		rules, ok := allowed[p.ImportPath]
		if !ok {
			t.Errorf("package %s has no import rule in archtest; add it (and to DESIGN.md §4)", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if isStd(imp) {
				continue
			}
			permitted := false
			for _, r := range rules {
				if imp == r || (strings.HasSuffix(r, "/") && strings.HasPrefix(imp, r)) {
					permitted = true
				}
			}
			if !permitted {
				t.Errorf("%s imports %s, which its rule does not allow", p.ImportPath, imp)
			}
		}
	}
}

// TestPackageDocs: every package has a doc comment that starts with the
// conventional "Package name" (or "Command name" for commands).
func TestPackageDocs(t *testing.T) {
	for _, p := range list(t, "switchboard/...") {
		want := "Package " + p.Name + " "
		if p.Name == "main" {
			last := p.ImportPath[strings.LastIndex(p.ImportPath, "/")+1:]
			want = "Command " + last + " "
		}
		if !strings.HasPrefix(p.Doc, strings.TrimSuffix(want, " ")) {
			t.Errorf("%s: doc comment %q should start with %q", p.ImportPath, p.Doc, want)
		}
	}
}
