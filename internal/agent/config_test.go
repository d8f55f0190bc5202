package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configDir makes a directory with a readable token file "tok", an
// unreadable one "secret.jwt" (when not root), an empty one "empty" and
// returns it.
func configDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tok"), []byte("a.b.c\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "empty"), []byte(" \n"), 0o600)
	return dir
}

func parse(t *testing.T, dir, yaml string) (*Config, error) {
	t.Helper()
	return ParseConfig(strings.NewReader(yaml), dir)
}

func TestConfigValid(t *testing.T) {
	dir := configDir(t)
	cfg, err := parse(t, dir, `
url: https://relay.example
token_file: tok
status_listen: 127.0.0.1:9100
streams:
  - name: ctl
    kind: tcp
    topic: expt42/ctl
    addr: 127.0.0.1:9000
    chunk: 8KiB
  - name: cams
    kind: http-push
    listen: 127.0.0.1:0
    feeds:
      - {name: video0, topic: expt42/video0}
      - {name: video1, topic: expt42/video1, token_file: tok}
  - name: sensor
    kind: exec
    topic: expt42/data
    command: [cat, -u]
    env: {A: "1"}
    dir: .
  - name: ssh
    kind: shell
    topic: expt42/ssh
    addr: localhost:22
    max_sessions: 4
`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TokenFile != filepath.Join(dir, "tok") {
		t.Errorf("token file not resolved against the config's directory: %q", cfg.TokenFile)
	}
	s := cfg.Streams
	if s[0].Chunk != 8<<10 || s[1].Chunk != DefaultChunk || s[3].MaxSessions != 4 || s[2].Dir != dir {
		t.Errorf("settings: %+v", s)
	}
	if !filepath.IsAbs(s[2].Command[0]) || s[2].Env["A"] != "1" {
		t.Errorf("exec: %+v", s[2])
	}
}

func TestConfigErrors(t *testing.T) {
	dir := configDir(t)
	unreadable := filepath.Join(dir, "secret.jwt")
	os.WriteFile(unreadable, []byte("x"), 0o000)
	head := "url: http://127.0.0.1:8080\ntoken_file: tok\nstreams:\n"
	tcp := "  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:9000}\n"
	for _, tc := range []struct {
		name, yaml    string
		path, problem string // both must appear in the error
	}{
		{"empty", "", "", "empty configuration"},
		{"not yaml", "url: [", "", "yaml"},
		{"unknown top key", head + tcp + "colour: red\n", "colour", "unknown key"},
		{"repeated key", head + tcp + "url: http://x\n", "url", "given twice"},
		{"no url", "token_file: tok\nstreams:\n" + tcp, "url", "required"},
		{"bad url", "url: ftp://x\ntoken_file: tok\nstreams:\n" + tcp, "url", "want an http"},
		{"url with credentials", "url: https://u:p@x\ntoken_file: tok\nstreams:\n" + tcp, "url", "credentials"},
		{"no streams", "url: http://x\ntoken_file: tok\n", "streams", "at least one"},
		{"streams not a list", "url: http://x\ntoken_file: tok\nstreams: {}\n", "streams", "want a list"},
		{"unknown kind", head + "  - {name: a, kind: udp, topic: t}\n", "streams[0].kind", `unknown kind "udp"`},
		{"no kind", head + "  - {name: a, topic: t}\n", "streams[0].kind", "required"},
		{"unknown stream key", head + tcp + "  - {name: b, kind: tcp, topic: t, addr: 127.0.0.1:1, adress: x}\n", "streams[1].adress", "unknown key"},
		{"key of another kind", head + "  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:1, command: [cat]}\n", "streams[0].command", "not a key of kind tcp"},
		{"missing topic", head + "  - {name: a, kind: tcp, addr: 127.0.0.1:9000}\n", "streams[0].topic", "required"},
		{"invalid topic", head + "  - {name: a, kind: tcp, topic: a//b, addr: 127.0.0.1:9000}\n", "streams[0].topic", "empty segment"},
		{"pattern topic", head + "  - {name: a, kind: tcp, topic: 'a/*', addr: 127.0.0.1:9000}\n", "streams[0].topic", "not allowed"},
		{"missing addr", head + "  - {name: a, kind: tcp, topic: t}\n", "streams[0].addr", "required"},
		{"bad addr", head + tcp + "  - {name: b, kind: tcp, topic: t, addr: 127.0.0.1}\n", "streams[1].addr", "want host:port"},
		{"bad port", head + "  - {name: a, kind: shell, topic: t, addr: 'h:99999'}\n", "streams[0].addr", "1-65535"},
		{"addr without host", head + "  - {name: a, kind: tcp, topic: t, addr: ':80'}\n", "streams[0].addr", "no host"},
		{"duplicate names", head + tcp + tcp, "streams[1].name", "also the name of streams[0]"},
		{"missing name", head + "  - {kind: tcp, topic: t, addr: 127.0.0.1:1}\n", "streams[0].name", "required"},
		{"bad name", head + "  - {name: 'a b', kind: tcp, topic: t, addr: 127.0.0.1:1}\n", "streams[0].name", "want 1-64"},
		{"unreadable token file", head + "  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:1, token_file: nope.jwt}\n", "streams[0].token_file", "no such file"},
		{"empty token file", head + "  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:1, token_file: empty}\n", "streams[0].token_file", "is empty"},
		{"no token at all", "url: http://x\nstreams:\n" + tcp, "streams[0].token_file", "required"},
		{"bad chunk", head + "  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:1, chunk: lots}\n", "streams[0].chunk", "want a positive size"},
		{"huge chunk", head + "  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:1, chunk: 1GiB}\n", "streams[0].chunk", "want 1 byte"},
		{"push without listen", head + "  - {name: a, kind: http-push, feeds: [{name: v, topic: t}]}\n", "streams[0].listen", "required"},
		{"push without feeds", head + "  - {name: a, kind: http-push, listen: '127.0.0.1:0'}\n", "streams[0].feeds", "at least one"},
		{"push with topic", head + "  - {name: a, kind: http-push, listen: '127.0.0.1:0', topic: t, feeds: [{name: v, topic: t}]}\n", "streams[0].topic", "not a key of kind http-push"},
		{"duplicate feeds", head + "  - {name: a, kind: http-push, listen: '127.0.0.1:0', feeds: [{name: v, topic: t}, {name: v, topic: u}]}\n", "streams[0].feeds[1].name", "duplicate feed name"},
		{"feed without topic", head + "  - {name: a, kind: http-push, listen: '127.0.0.1:0', feeds: [{name: v}]}\n", "streams[0].feeds[0].topic", "required"},
		{"unknown feed key", head + "  - {name: a, kind: http-push, listen: '127.0.0.1:0', feeds: [{name: v, topic: t, path: x}]}\n", "streams[0].feeds[0].path", "unknown key"},
		{"same listener twice", head + "  - {name: a, kind: http-push, listen: '127.0.0.1:8888', feeds: [{name: v, topic: t}]}\n  - {name: b, kind: http-push, listen: '127.0.0.1:8888', feeds: [{name: v, topic: t}]}\n", "streams[1].listen", "also streams[0].listen"},
		{"tiny ts chunk", head + "  - {name: a, kind: http-push, listen: '127.0.0.1:0', chunk: 100, feeds: [{name: v, topic: t}]}\n", "streams[0].chunk", "at least 188"},
		{"exec without command", head + "  - {name: a, kind: exec, topic: t}\n", "streams[0].command", "required"},
		{"exec command not found", head + "  - {name: a, kind: exec, topic: t, command: [no-such-program-here]}\n", "streams[0].command[0]", "not found"},
		{"exec bad dir", head + "  - {name: a, kind: exec, topic: t, command: [cat], dir: /no/such/dir}\n", "streams[0].dir", "no such file"},
		{"exec env not a map", head + "  - {name: a, kind: exec, topic: t, command: [cat], env: [A=1]}\n", "streams[0].env", "want a mapping"},
		{"bad max_sessions", head + "  - {name: a, kind: shell, topic: t, addr: 127.0.0.1:22, max_sessions: -1}\n", "streams[0].max_sessions", "positive whole number"},
		{"bad status_listen", head + tcp + "status_listen: nowhere\n", "status_listen", "want host:port"},
		{"stream not a mapping", head + "  - tcp\n", "streams[0]", "want a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, dir, tc.yaml)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.path) || !strings.Contains(msg, tc.problem) {
				t.Fatalf("error %q: want the key %q and %q", msg, tc.path, tc.problem)
			}
			if tc.path != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("error %T is not a *ConfigError", err)
				}
			}
		})
	}
	if os.Geteuid() != 0 { // root reads any file
		_, err := parse(t, dir, head+"  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:1, token_file: secret.jwt}\n")
		if err == nil || !strings.Contains(err.Error(), "streams[0].token_file") || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("unreadable token file: %v", err)
		}
	}
}

// TestConfigReportsEveryProblem: one run lists all problems, with lines.
func TestConfigReportsEveryProblem(t *testing.T) {
	_, err := parse(t, configDir(t), "url: http://x\ntoken_file: tok\nstreams:\n  - {name: a, kind: tcp, topic: t}\n  - {name: b, kind: exec, topic: 'x y', command: [cat]}\n")
	msg := err.Error()
	for _, want := range []string{"streams[0].addr", "streams[1].topic"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q missing from %q", want, msg)
		}
	}
	if !strings.Contains(msg, "(line 5)") {
		t.Errorf("no line number in %q", msg)
	}
}

func TestLoadConfigOverrides(t *testing.T) {
	dir := configDir(t)
	p := filepath.Join(dir, "host.yaml")
	os.WriteFile(p, []byte("streams:\n  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:9000}\n"), 0o600)
	if _, err := LoadConfig(p, Overrides{}); err == nil || !strings.Contains(err.Error(), "url: required") {
		t.Fatalf("no url: %v", err)
	}
	t.Chdir(dir)
	cfg, err := LoadConfig(p, Overrides{URL: "http://127.0.0.1:1", TokenFile: "tok", StatusListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != "http://127.0.0.1:1" || cfg.TokenFile != filepath.Join(dir, "tok") || cfg.StatusListen != "127.0.0.1:0" {
		t.Fatalf("%+v", cfg)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"1024": 1024, "32KiB": 32 << 10, "1MiB": 1 << 20, "1MB": 1e6, "2 KiB": 2048} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5KiB", "2TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// FuzzParseConfig: any input is either a configuration that validates or
// errors that each name a problem; nothing panics.
func FuzzParseConfig(f *testing.F) {
	f.Add("url: http://127.0.0.1:8080\ntoken_file: tok\nstreams:\n  - {name: a, kind: tcp, topic: t, addr: 127.0.0.1:9000}\n")
	f.Add("streams:\n  - name: c\n    kind: http-push\n    listen: 127.0.0.1:0\n    feeds: [{name: v, topic: t}, {name: v}]\n")
	f.Add("streams: [{kind: exec, command: [], env: {A: [1]}}, 3, null]\nurl: [x]\n")
	f.Add("a: &x [*x]\n")
	f.Add("---\n---\n")
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "tok"), []byte("a.b.c"), 0o600)
	f.Fuzz(func(t *testing.T, yaml string) {
		cfg, err := ParseConfig(strings.NewReader(yaml), dir)
		if err == nil {
			if cfg.URL == "" || (len(cfg.Streams) == 0 && cfg.Agent == nil) {
				t.Fatalf("accepted without url or streams: %+v", cfg)
			}
			return
		}
		if err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}
