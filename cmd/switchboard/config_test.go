package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/switchboard-hub/switchboard/internal/datadir"
)

// writeConfig writes a configuration file and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveFlagSet returns serve's flags after the command line args and the
// environment, as the command sees them before its file is read.
func serveFlagSet(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := newServeCommand(stdio{}).Flags()
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

func value(fs *pflag.FlagSet, name string) string { return fs.Lookup(name).Value.String() }

// TestConfigPrecedence: the command line wins over the environment, which
// wins over the file, which wins over the default; a file's setting counts
// as given (serve's cluster defaults look at Changed).
func TestConfigPrecedence(t *testing.T) {
	path := writeConfig(t, `
data_dir: /srv/switchboard
listen: 0.0.0.0:9000
leeway: 7s
send_queue: 4MiB
allow_origin: [https://a.example, https://b.example]
lame_duck: 2s
max_requests_per_address: 12.5
`)
	t.Setenv("SWITCHBOARD_CONFIG", path)
	t.Setenv("SWITCHBOARD_LEEWAY", "9s")
	t.Setenv("SWITCHBOARD_LISTEN", "127.0.0.1:7000")
	fs := serveFlagSet(t, "--listen", "127.0.0.1:6000", "--allow-origin", "https://c.example")
	if err := loadConfigFile(fs, serveFileKeys(fs)); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"listen":                   "127.0.0.1:6000",      // flag over environment and file
		"allow-origin":             "[https://c.example]", // a flag's list replaces the file's
		"leeway":                   "9s",                  // environment over file
		"data-dir":                 "/srv/switchboard",    // file over default
		"send-queue":               "4MiB",
		"lame-duck":                "2s",
		"max-requests-per-address": "12.5",
		"code-ttl":                 "30s", // default
	} {
		if got := value(fs, flag); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	if !fs.Changed("lame-duck") {
		t.Error("--lame-duck set by the file does not count as given")
	}
	if fs.Changed("code-ttl") {
		t.Error("--code-ttl, in no file, counts as given")
	}
}

// TestConfigErrors: every problem names its key and line.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"unknown key", "listen: 127.0.0.1:1\nlisten_adress: x\n", []string{"listen_adress (line 2): unknown key", "did you mean listen"}},
		{"dash spelling", "\n\ndata-dir: /x\n", []string{"data-dir (line 3): unknown key (write data_dir"}},
		{"twice", "leeway: 1s\nleeway: 2s\n", []string{"leeway (line 2): given twice (first on line 1)"}},
		{"bad duration", "code_ttl: soon\n", []string{"code_ttl (line 1):", "soon"}},
		{"bad size", "send_queue: lots\n", []string{"send_queue (line 1):", "size"}},
		{"list for a scalar", "listen: [a, b]\n", []string{"listen (line 1): want a single value"}},
		{"scalar for a list", "trusted_proxy: 10.0.0.0/8\n", []string{"trusted_proxy (line 1): want a list"}},
		{"no value", "public_url:\n", []string{"public_url (line 1): no value"}},
		{"the file's own flag", "config: other.yaml\n", []string{"config (line 1): unknown key"}},
		{"help", "help: true\n", []string{"help (line 1): unknown key"}},
		{"not a mapping", "- listen\n", []string{"want a mapping"}},
		{"two documents", "listen: a:1\n---\nlisten: b:2\n", []string{"more than one YAML document"}},
		{"several problems", "nope: 1\nleeway: x\n", []string{"nope (line 1)", "leeway (line 2)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.file)
			fs := serveFlagSet(t, "--config", path)
			err := loadConfigFile(fs, serveFileKeys(fs))
			if err == nil {
				t.Fatalf("accepted %q", tc.file)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// TestConfigEveryFlagHasAKey: each of serve's flags (those added later
// too) can be set from a file, with its key.
func TestConfigEveryFlagHasAKey(t *testing.T) {
	fs := serveFlagSet(t)
	var text strings.Builder
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == configFlag || f.Name == "help" {
			return
		}
		text.WriteString(configKey(f.Name) + ": " + exampleValue(f) + "\n")
		n++
	})
	root, err := parseConfigDocument([]byte(text.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyConfig(root, serveFileKeys(fs)); err != nil {
		t.Fatal(err)
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != configFlag && f.Name != "help" && !f.Changed {
			t.Errorf("--%s was not set by its key %s", f.Name, configKey(f.Name))
		}
	})
	if n < 40 {
		t.Errorf("only %d flags: the flag set is not serve's", n)
	}
}

// TestServeConfigFileEndToEnd: serve reads --config: a bad key stops it
// before it starts, naming the key and line.
func TestServeConfigFileEndToEnd(t *testing.T) {
	path := writeConfig(t, "data_dir: "+t.TempDir()+"\nlisten: 127.0.0.1:0\nsend_queeu: 1MiB\n")
	_, err := run(t.Context(), nil, "serve", "--config", path)
	if err == nil || !strings.Contains(err.Error(), "send_queeu (line 3): unknown key") {
		t.Fatalf("serve with an unknown key: %v", err)
	}
}

// TestServeRunsFromConfigFile: a node started with --config takes the
// file's settings (its node id shows in /healthz), and flags still win
// (startServe's --listen and --data-dir over the file's).
func TestServeRunsFromConfigFile(t *testing.T) {
	path := writeConfig(t, "node_id: from-file\nlisten: 127.0.0.1:1\nallow_origin: [https://lab.example]\ncode_ttl: 10s\n")
	dir := startServe(t, "--config", path)
	u, err := datadir.ReadPublicURL(dir)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var health struct{ Node string }
	if err := json.NewDecoder(resp.Body).Decode(&health); err != nil || health.Node != "from-file" {
		t.Errorf("/healthz node %q (%v), want the file's node_id from-file", health.Node, err)
	}
}

// TestHostConfigFlagsKeys: the host's file takes its command's flags
// (log_level, log_format) by the same rules beside the agent's keys, the
// command line wins, and unknown keys are still errors naming their line.
func TestHostConfigFlagsKeys(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "t.jwt")
	if err := os.WriteFile(tok, []byte("x.y.z"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := "url: http://127.0.0.1:1\ntoken_file: t.jwt\nlog_level: debug\nlog_format: json\nstreams:\n  - {name: s, kind: tcp, topic: a/b, addr: 127.0.0.1:2}\n"
	path := filepath.Join(dir, "host.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(args ...string) (*hostFlags, error) {
		cmd := newHostCommand(stdio{})
		fs := cmd.Flags()
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		keys := hostFileKeys(fs)
		if err := loadConfigFile(fs, keys); err != nil {
			return nil, err
		}
		var f hostFlags
		f.config = value(fs, "config")
		f.url, f.tokenFile, f.statusListen = value(fs, "url"), value(fs, "token-file"), value(fs, "status-listen")
		f.format, f.level = value(fs, "log-format"), value(fs, "log-level")
		for _, fl := range keys.keyed() {
			f.commandKeys = append(f.commandKeys, configKey(fl.Name))
		}
		_, err := hostConfig(&f)
		return &f, err
	}
	f, err := load("--config", path, "--log-level", "warn")
	if err != nil {
		t.Fatal(err)
	}
	if f.format != "json" || f.level != "warn" {
		t.Errorf("log format %q, level %q: want json from the file and warn from the flag", f.format, f.level)
	}

	if err := os.WriteFile(path, []byte(cfg+"log_levle: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := load("--config", path); err == nil || !strings.Contains(err.Error(), "log_levle (line 7): unknown key") {
		t.Errorf("unknown key: %v", err)
	}
	// The agent's own keys are still checked by the agent.
	if err := os.WriteFile(path, []byte(cfg+"topic: a/b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := load("--config", path); err == nil || !strings.Contains(err.Error(), "topic (line 7): unknown key") {
		t.Errorf("a quick-form flag's key in the file: %v", err)
	}
}

// TestHostExampleStillLoads: the shipped host example (every key of the
// agent's file) loads with the command's keys added.
func TestHostExampleStillLoads(t *testing.T) {
	fs := newHostCommand(stdio{}).Flags()
	if err := fs.Parse([]string{"--config", filepath.Join(repoRoot, "docs", "host.example.yaml")}); err != nil {
		t.Fatal(err)
	}
	root, err := readConfigDocument(value(fs, "config"))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyConfig(root, hostFileKeys(fs)); err != nil {
		t.Fatalf("docs/host.example.yaml: %v", err)
	}
	// The agent's own checks find only the paths this machine lacks
	// (/etc/switchboard/…), no key it does not know.
	keys := hostFileKeys(fs)
	f := hostFlags{config: value(fs, "config")}
	for _, fl := range keys.keyed() {
		f.commandKeys = append(f.commandKeys, configKey(fl.Name))
	}
	if _, err := hostConfig(&f); err != nil && strings.Contains(err.Error(), "unknown key") {
		t.Errorf("docs/host.example.yaml: %v", err)
	}
}

// FuzzConfigDocument: no input makes the parser or the flag settings
// panic, and every error is one the loader explains.
func FuzzConfigDocument(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:1\nallow_origin: [a, b]\n"))
	f.Add([]byte("data-dir: x\n"))
	f.Add([]byte("- a\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("send_queue: 1MiB\nleeway: 1s\nslow_consumer: close\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		root, err := parseConfigDocument(b)
		if err != nil {
			return
		}
		fs := newServeCommand(stdio{}).Flags()
		err = applyConfig(root, serveFileKeys(fs))
		var ce *configError
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("an error that names no key: %v", err)
		}
	})
}
