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
	return !strings.Contains(first, ".")
}

// module is this module's path (go.mod); the rules below name packages in full.
const module = "github.com/switchboard-hub/switchboard"

// TestRelayCoreImportsOnlyStdlib: the relay core knows nothing of HTTP,
// storage, clustering or any third-party code.
func TestRelayCoreImportsOnlyStdlib(t *testing.T) {
	p := list(t, "github.com/switchboard-hub/switchboard/internal/relay")[0]
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
	"github.com/switchboard-hub/switchboard/internal/topic":     {},
	"github.com/switchboard-hub/switchboard/internal/relay":     {},
	"github.com/switchboard-hub/switchboard/internal/apierr":    {},
	"github.com/switchboard-hub/switchboard/internal/datadir":   {},
	"github.com/switchboard-hub/switchboard/internal/buildinfo": {}, // the binary's version (ldflags, build information): standard library only
	"github.com/switchboard-hub/switchboard/internal/archtest":  {},
	"github.com/switchboard-hub/switchboard/internal/ratelimit": {}, // a token bucket per key (address, token): standard library only
	"github.com/switchboard-hub/switchboard/pkg/wire":           {}, // the wire contract: standard library only
	"github.com/switchboard-hub/switchboard/internal/auth":      {"github.com/switchboard-hub/switchboard/internal/topic", "github.com/switchboard-hub/switchboard/pkg/wire", "github.com/golang-jwt/jwt/v5"},
	"github.com/switchboard-hub/switchboard/internal/wsconn":    {"github.com/switchboard-hub/switchboard/internal/relay", "github.com/coder/websocket"},
	"github.com/switchboard-hub/switchboard/internal/sseconn":   {"github.com/switchboard-hub/switchboard/internal/relay"}, // server-sent events: a read-only relay.Conn over net/http
	"github.com/switchboard-hub/switchboard/internal/access": {"github.com/switchboard-hub/switchboard/internal/auth", "github.com/switchboard-hub/switchboard/internal/relay", "github.com/switchboard-hub/switchboard/internal/topic",
		"github.com/switchboard-hub/switchboard/internal/apierr", "github.com/switchboard-hub/switchboard/internal/wsconn", "github.com/switchboard-hub/switchboard/internal/sseconn", "github.com/switchboard-hub/switchboard/pkg/wire",
		"github.com/switchboard-hub/switchboard/internal/ratelimit"}, // HTTP publish: requests per token and per address
	"github.com/switchboard-hub/switchboard/internal/shell": {"github.com/switchboard-hub/switchboard/internal/access", "github.com/switchboard-hub/switchboard/internal/relay", "github.com/switchboard-hub/switchboard/internal/auth",
		"github.com/switchboard-hub/switchboard/internal/apierr", "github.com/switchboard-hub/switchboard/pkg/wire"}, // 1:1 sessions, an access endpoint
	"github.com/switchboard-hub/switchboard/internal/control": {"github.com/switchboard-hub/switchboard/internal/access", "github.com/switchboard-hub/switchboard/internal/apierr", "github.com/switchboard-hub/switchboard/internal/auth",
		"github.com/switchboard-hub/switchboard/internal/relay", "github.com/switchboard-hub/switchboard/internal/store", "github.com/switchboard-hub/switchboard/internal/topic", "github.com/switchboard-hub/switchboard/pkg/wire",
		"github.com/switchboard-hub/switchboard/internal/jobproto", // agent enrolment: the agent id and label grammar
		"github.com/switchboard-hub/switchboard/internal/cluster",  // revocations: record, publish on the bus, enforce on every node
		"github.com/golang-jwt/jwt/v5", "github.com/prometheus/client_golang/"},
	"github.com/switchboard-hub/switchboard/internal/server": {"github.com/switchboard-hub/switchboard/internal/", "github.com/switchboard-hub/switchboard/pkg/wire"},
	"github.com/switchboard-hub/switchboard/pkg/client":      {"github.com/switchboard-hub/switchboard/pkg/wire", "github.com/coder/websocket"}, // never internal/…
	"github.com/switchboard-hub/switchboard/internal/bench": {"github.com/switchboard-hub/switchboard/internal/jobproto", "github.com/switchboard-hub/switchboard/pkg/client", "github.com/switchboard-hub/switchboard/pkg/wire", "github.com/switchboard-hub/switchboard/internal/auth", "github.com/switchboard-hub/switchboard/internal/datadir",
		"github.com/switchboard-hub/switchboard/internal/store/pgtemp", // bench cluster: a throwaway PostgreSQL without --database-url
		"github.com/coder/websocket"},                                  // bench access --baseline: a bare websocket upgrade, the machine's floor
	"github.com/switchboard-hub/switchboard/internal/agent": {"github.com/switchboard-hub/switchboard/internal/jobproto", "github.com/switchboard-hub/switchboard/pkg/client", "github.com/switchboard-hub/switchboard/pkg/wire", "github.com/switchboard-hub/switchboard/internal/auth", "github.com/switchboard-hub/switchboard/internal/topic", "github.com/switchboard-hub/switchboard/internal/apierr",
		"go.yaml.in/yaml/v3", "github.com/coder/websocket"},
	"github.com/switchboard-hub/switchboard/cmd/switchboard": {"github.com/", "go.yaml.in/yaml/v3"}, // yaml: serve's and host's --config files
	"github.com/switchboard-hub/switchboard/internal/store":  {},
	"github.com/switchboard-hub/switchboard/internal/store/sqlite": {"github.com/switchboard-hub/switchboard/internal/store", "github.com/switchboard-hub/switchboard/internal/store/jobcodec", "modernc.org/sqlite", "modernc.org/sqlite/lib",
		"github.com/pressly/goose/v3"},
	"github.com/switchboard-hub/switchboard/internal/store/postgres": {"github.com/switchboard-hub/switchboard/internal/store", "github.com/switchboard-hub/switchboard/internal/store/jobcodec", "github.com/jackc/pgx/v5/", "github.com/jackc/pgx/v5",
		"github.com/pressly/goose/v3", "github.com/switchboard-hub/switchboard/internal/blob"}, // blob: result files shared by a cluster (Store.Blobs)
	"github.com/switchboard-hub/switchboard/internal/store/storetest": {"github.com/switchboard-hub/switchboard/internal/store", "github.com/switchboard-hub/switchboard/internal/servertest/wait"},
	"github.com/switchboard-hub/switchboard/internal/store/jobcodec":  {"github.com/switchboard-hub/switchboard/internal/store"},
	"github.com/switchboard-hub/switchboard/internal/store/pgtest":    {"github.com/jackc/pgx/v5", "github.com/switchboard-hub/switchboard/internal/store/pgtemp"},
	"github.com/switchboard-hub/switchboard/internal/store/pgtemp":    {}, // a throwaway PostgreSQL (initdb, pg_ctl): for pgtest and bench cluster
	"github.com/switchboard-hub/switchboard/internal/store/storeload": {"github.com/switchboard-hub/switchboard/internal/store"},
	"github.com/switchboard-hub/switchboard/internal/playscript":      {},
	"github.com/switchboard-hub/switchboard/internal/jobproto":        {},
	"github.com/switchboard-hub/switchboard/internal/web": {"github.com/switchboard-hub/switchboard/internal/auth", "github.com/switchboard-hub/switchboard/internal/relay", "github.com/switchboard-hub/switchboard/internal/store",
		"github.com/switchboard-hub/switchboard/internal/apierr", "github.com/switchboard-hub/switchboard/internal/topic", "github.com/switchboard-hub/switchboard/pkg/wire", "github.com/coreos/go-oidc/v3/oidc", "golang.org/x/oauth2"},
	"github.com/switchboard-hub/switchboard/internal/blob":          {},                                                       // result files: standard library only
	"github.com/switchboard-hub/switchboard/internal/blob/blobtest": {"github.com/switchboard-hub/switchboard/internal/blob"}, // every blob.Store's conformance suite
	// The bus and its adapters (relay Peers today); access for its types, later.
	"github.com/switchboard-hub/switchboard/internal/cluster":         {"github.com/switchboard-hub/switchboard/internal/relay", "github.com/switchboard-hub/switchboard/internal/access", "github.com/switchboard-hub/switchboard/pkg/wire"},
	"github.com/switchboard-hub/switchboard/internal/cluster/membus":  {"github.com/switchboard-hub/switchboard/internal/cluster"}, // the in-process bus
	"github.com/switchboard-hub/switchboard/internal/cluster/bustest": {"github.com/switchboard-hub/switchboard/internal/cluster"}, // every Bus's conformance suite
	// The NATS bus: embedded clustered nats-servers or an external NATS.
	"github.com/switchboard-hub/switchboard/internal/cluster/natsbus": {"github.com/switchboard-hub/switchboard/internal/cluster", "github.com/nats-io/nats-server/v2/server", "github.com/nats-io/nats.go"},
	"github.com/switchboard-hub/switchboard/internal/jobs": {"github.com/switchboard-hub/switchboard/internal/jobproto", "github.com/switchboard-hub/switchboard/internal/store", "github.com/switchboard-hub/switchboard/internal/blob",
		"github.com/switchboard-hub/switchboard/internal/relay", "github.com/switchboard-hub/switchboard/internal/topic", // relay for Message and Publisher only: no connection
		"github.com/switchboard-hub/switchboard/internal/cluster"}, // job events between the nodes
	"github.com/switchboard-hub/switchboard/internal/jobs/agentlink": {"github.com/switchboard-hub/switchboard/internal/jobs", "github.com/switchboard-hub/switchboard/internal/access", "github.com/switchboard-hub/switchboard/internal/relay",
		"github.com/switchboard-hub/switchboard/internal/auth", "github.com/switchboard-hub/switchboard/internal/apierr", "github.com/switchboard-hub/switchboard/pkg/wire", "github.com/switchboard-hub/switchboard/internal/jobproto", // the agent channel: an access endpoint and its sessions
		"github.com/switchboard-hub/switchboard/internal/cluster"}, // agents' presence and commands between the nodes
	"github.com/switchboard-hub/switchboard/internal/jobs/uwsapi": {"github.com/switchboard-hub/switchboard/internal/jobs", "github.com/switchboard-hub/switchboard/internal/blob", "github.com/switchboard-hub/switchboard/internal/auth", "github.com/switchboard-hub/switchboard/internal/apierr",
		"github.com/switchboard-hub/switchboard/internal/store", "github.com/switchboard-hub/switchboard/internal/jobproto", "github.com/switchboard-hub/switchboard/pkg/wire"}, // store and jobproto for their types and checks only
	// The one test harness: a whole node, tokens for it, a client to dial it.
	"github.com/switchboard-hub/switchboard/internal/servertest": {"github.com/switchboard-hub/switchboard/internal/server", "github.com/switchboard-hub/switchboard/internal/apispec/apispectest", "github.com/switchboard-hub/switchboard/internal/store/sqlite", "github.com/switchboard-hub/switchboard/internal/auth",
		"github.com/switchboard-hub/switchboard/pkg/client", "github.com/switchboard-hub/switchboard/pkg/wire", "github.com/golang-jwt/jwt/v5",
		"github.com/switchboard-hub/switchboard/internal/servertest/wait", "github.com/switchboard-hub/switchboard/internal/cluster/natsbus", // StartCluster: nodes on embedded NATS
		"github.com/switchboard-hub/switchboard/internal/store/pgtest", "github.com/switchboard-hub/switchboard/internal/store/postgres"}, // and one PostgreSQL
	"github.com/switchboard-hub/switchboard/internal/servertest/wait": {}, // polling with a deadline: standard library only, so every test can use it
	// The OpenAPI description (embedded YAML, served as JSON) and the test
	// support that checks the tests' traffic against it with kin-openapi.
	"github.com/switchboard-hub/switchboard/internal/apispec":             {"github.com/switchboard-hub/switchboard/internal/apierr", "go.yaml.in/yaml/v3"},
	"github.com/switchboard-hub/switchboard/internal/apispec/apispectest": {"github.com/switchboard-hub/switchboard/internal/apispec", "github.com/getkin/kin-openapi/"},
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
	const harness = "github.com/switchboard-hub/switchboard/internal/servertest"
	for _, p := range list(t, module+"/...") {
		for _, imp := range p.Imports {
			if (imp == harness || strings.HasPrefix(imp, harness+"/")) && !isTestSupport(p.ImportPath) {
				t.Errorf("%s imports %s outside its tests", p.ImportPath, imp)
			}
		}
	}
}

func TestImportRules(t *testing.T) {
	for _, p := range list(t, module+"/...") {
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
	for _, p := range list(t, module+"/...") {
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
