package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
)

const agentYAML = `url: https://hub.example
token_file: tok
agent:
  id: c1
  token_file: agent.jwt
  labels: [role=client, site=UNL]
  state_dir: state
  actions:
    - name: download
      description: fetch files and count bytes
      command: [printf, --server, "{server}", --count, "{count}", "{{literal}}", "x={server}:{count}"]
      timeout: 10m
      max_concurrent: 3
      env: {LANG: C}
      pass_env: [HOME, PATH]
      params:
        - {name: server, type: string, required: true, pattern: "[a-z0-9.-]+", max_length: 253}
        - {name: count, type: int, min: 1, max: 100, default: "1"}
        - {name: mode, type: enum, values: [fast, slow], description: how}
        - {name: verbose, type: bool}
        - {name: rate, type: number, min: 0.5}
        - {name: flags, type: string, allow_dash: true, allow_control_chars: true, default: "-v"}
    - name: noop
      command: [/bin/true]
      timeout: 1s
      dir: .
`

func TestAgentConfigValid(t *testing.T) {
	dir := configDir(t)
	os.WriteFile(filepath.Join(dir, "agent.jwt"), []byte("x.y.z\n"), 0o600)
	cfg, err := parse(t, dir, agentYAML)
	if err != nil {
		t.Fatal(err)
	}
	ac := cfg.Agent
	if len(cfg.Streams) != 0 || ac == nil || ac.ID != "c1" || ac.TokenFile != filepath.Join(dir, "agent.jwt") ||
		ac.StateDir != filepath.Join(dir, "state") || !slices.Equal(ac.Labels, []string{"role=client", "site=UNL"}) {
		t.Fatalf("agent %+v", ac)
	}
	if len(ac.Actions) != 2 {
		t.Fatalf("actions %+v", ac.Actions)
	}
	d := ac.Actions[0]
	if d.Name != "download" || d.Description != "fetch files and count bytes" || time.Duration(d.Timeout) != 10*time.Minute ||
		!filepath.IsAbs(d.Command[0]) || d.Command[2] != "{server}" || d.Env["LANG"] != "C" || !slices.Equal(d.PassEnv, []string{"HOME", "PATH"}) {
		t.Fatalf("download %+v", d)
	}
	p := d.Params
	if len(p) != 6 || !p[0].Required || p[0].Pattern != "[a-z0-9.-]+" || p[0].MaxLength != 253 || *p[1].Min != 1 || *p[1].Max != 100 ||
		p[1].Default != "1" || p[1].Type != jobproto.ParamInt || !slices.Equal(p[2].Values, []string{"fast", "slow"}) ||
		p[2].Description != "how" || p[3].Type != jobproto.ParamBool || *p[4].Min != 0.5 || p[4].Max != nil ||
		p[0].AllowDash || p[0].AllowControlChars || !p[5].AllowDash || !p[5].AllowControlChars || p[5].Default != "-v" {
		t.Fatalf("params %+v", p)
	}
	if d.MaxConcurrent != 3 || ac.Actions[1].MaxConcurrent != 0 || ac.Actions[1].Concurrency() != jobproto.DefaultMaxConcurrent {
		t.Fatalf("max_concurrent: %d and %d", d.MaxConcurrent, ac.Actions[1].MaxConcurrent)
	}
	if ac.Actions[1].Dir != dir || ac.Actions[1].Params != nil {
		t.Fatalf("noop %+v", ac.Actions[1])
	}
	// An agent needs no state directory without actions, and no streams.
	if _, err := parse(t, dir, "url: http://x\ntoken_file: tok\nagent: {id: c2}\n"); err != nil {
		t.Fatal(err)
	}
}

func TestParseArg(t *testing.T) {
	vals := map[string]string{"a": "A B;C", "b": ""}
	for in, want := range map[string]string{
		"plain": "plain", "{a}": "A B;C", "x{a}y{b}z": "xA B;Cyz", "{{a}}": "{a}", "}}{{": "}{", "": "", "{{{a}}}": "{A B;C}",
	} {
		parts, err := parseArg(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := expandArg(parts, vals); got != want {
			t.Errorf("%q → %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{"{", "}", "{a", "a}", "{}", "{a b}", "{{a}", "{1a}"} {
		if _, err := parseArg(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestAgentConfigErrors(t *testing.T) {
	dir := configDir(t)
	os.WriteFile(filepath.Join(dir, "afile"), []byte("x"), 0o600)
	head := "url: http://127.0.0.1:8080\ntoken_file: tok\nagent:\n  id: c1\n  state_dir: state\n"
	// action returns an actions list with one action made of the given
	// flow-mapping fields (name, command and timeout filled in unless given).
	action := func(fields string) string {
		f := fields
		if !strings.Contains(f, "name:") {
			f += ", name: a"
		}
		if !strings.Contains(f, "command:") {
			f += ", command: [/bin/true]"
		}
		if !strings.Contains(f, "timeout:") {
			f += ", timeout: 1m"
		}
		return head + "  actions:\n    - {" + strings.TrimPrefix(f, ", ") + "}\n"
	}
	param := func(p string) string { return action("params: [" + p + "]") }
	many := func(n int, f func(i int) string) string {
		var s []string
		for i := range n {
			s = append(s, f(i))
		}
		return strings.Join(s, ", ")
	}
	for _, tc := range []struct {
		name, yaml    string
		path, problem string
	}{
		{"neither streams nor agent", "url: http://x\ntoken_file: tok\n", "streams", "at least one stream is required (or an agent section)"},
		{"agent not a mapping", "url: http://x\ntoken_file: tok\nagent: [c1]\n", "agent", "want a mapping"},
		{"unknown agent key", head + "  colour: red\n", "agent.colour", "unknown key"},
		{"no id", "url: http://x\ntoken_file: tok\nagent: {labels: [a=b]}\n", "agent.id", "required"},
		{"bad id", "url: http://x\ntoken_file: tok\nagent: {id: 'c 1'}\n", "agent.id", "want 1-64"},
		{"no token", "url: http://x\nagent: {id: c1}\n", "agent.token_file", "required"},
		{"missing token file", "url: http://x\nagent: {id: c1, token_file: nope.jwt}\n", "agent.token_file", "no such file"},
		{"empty token file", "url: http://x\nagent: {id: c1, token_file: empty}\n", "agent.token_file", "is empty"},
		{"labels not a list", head + "  labels: role=client\n", "agent.labels", "want a list"},
		{"bad label", head + "  labels: [role]\n", "agent.labels[0]", "want key=value"},
		{"bad label value", head + "  labels: ['role=a b']\n", "agent.labels[0]", "want key=value"},
		{"label key twice", head + "  labels: [role=a, role=b]\n", "agent.labels[1]", `the key "role" is also in agent.labels[0]`},
		{"too many labels", head + "  labels: [" + many(33, func(i int) string { return fmt.Sprintf("k%d=v", i) }) + "]\n", "agent.labels", "at most 32"},
		{"no state_dir", "url: http://x\ntoken_file: tok\nagent:\n  id: c1\n  actions: [{name: a, command: [/bin/true], timeout: 1m}]\n", "agent.state_dir", "required with actions"},
		{"state_dir a file", "url: http://x\ntoken_file: tok\nagent: {id: c1, state_dir: afile}\n", "agent.state_dir", "is not a directory"},
		{"actions not a list", head + "  actions: {a: 1}\n", "agent.actions", "want a list of actions"},
		{"action not a mapping", head + "  actions: [a]\n", "agent.actions[0]", "want a mapping"},
		{"too many actions", head + "  actions: [" + many(65, func(i int) string { return fmt.Sprintf("{name: a%d, command: [/bin/true], timeout: 1m}", i) }) + "]\n", "agent.actions", "at most 64"},
		{"unknown action key", action("shell: true"), "agent.actions[0].shell", "unknown key"},
		{"duplicate action", head + "  actions:\n    - {name: a, command: [/bin/true], timeout: 1m}\n    - {name: a, command: [/bin/true], timeout: 1m}\n", "agent.actions[1].name", "also the name of agent.actions[0]"},
		{"no action name", head + "  actions:\n    - {command: [/bin/true], timeout: 1m}\n", "agent.actions[0].name", "required"},
		{"bad action name", action("name: 1a"), "agent.actions[0].name", "want a letter"},
		{"no timeout", head + "  actions:\n    - {name: a, command: [/bin/true]}\n", "agent.actions[0].timeout", "required"},
		{"bad timeout", action("timeout: soon"), "agent.actions[0].timeout", "want a positive duration"},
		{"negative timeout", action("timeout: -1s"), "agent.actions[0].timeout", "want a positive duration"},
		{"zero max_concurrent", action("max_concurrent: 0"), "agent.actions[0].max_concurrent", "want a positive whole number"},
		{"huge max_concurrent", action("max_concurrent: 5000"), "agent.actions[0].max_concurrent", "at most 1024"},
		{"no command", head + "  actions:\n    - {name: a, timeout: 1m}\n", "agent.actions[0].command", "required"},
		{"empty command", action("command: []"), "agent.actions[0].command", "required"},
		{"command not found", action("command: [no-such-program-here]"), "agent.actions[0].command[0]", "not found"},
		{"command not absolute and missing", action("command: [./nope]"), "agent.actions[0].command[0]", "no such file"},
		{"placeholder in program", action("command: ['/bin/{p}'], params: [{name: p, type: string}]"), "agent.actions[0].command[0]", "cannot hold placeholders"},
		{"undeclared placeholder", action("command: [/bin/echo, '{server}']"), "agent.actions[0].command[1]", "{server} is not a parameter of the action (declared: none)"},
		{"placeholder case", action("command: [/bin/echo, '{Server}'], params: [{name: server, type: string}]"), "agent.actions[0].command[1]", "declared: server"},
		{"lone brace", action("command: [/bin/echo, 'a}']"), "agent.actions[0].command[1]", "a lone }"},
		{"unclosed brace", action("command: [/bin/echo, '{a']"), "agent.actions[0].command[1]", "is not closed"},
		{"json argument", action(`command: [/bin/echo, '{"a": 1}']`), "agent.actions[0].command[1]", "is not a placeholder"},
		{"env not a map", action("env: [A=1]"), "agent.actions[0].env", "want a mapping"},
		{"bad env name", action("env: {'A=B': x}"), "agent.actions[0].env.A=B", "not a valid environment variable name"},
		{"switchboard env", action("env: {SWITCHBOARD_JOB: x}"), "agent.actions[0].env.SWITCHBOARD_JOB", "set by the agent"},
		{"pass_env not a list", action("pass_env: HOME"), "agent.actions[0].pass_env", "want a list"},
		{"pass_env twice", action("pass_env: [HOME, HOME]"), "agent.actions[0].pass_env[1]", "listed twice"},
		{"pass_env and env", action("pass_env: [HOME], env: {HOME: /}"), "agent.actions[0].pass_env[0]", "also set in env"},
		{"pass_env switchboard", action("pass_env: [SWITCHBOARD_TOKEN_FILE]"), "agent.actions[0].pass_env[0]", "set by the agent"},
		{"bad dir", action("dir: /no/such/dir"), "agent.actions[0].dir", "no such file"},
		{"dir a file", action("dir: afile"), "agent.actions[0].dir", "is not a directory"},
		{"params not a list", action("params: {a: 1}"), "agent.actions[0].params", "want a list of parameters"},
		{"unknown param key", param("{name: p, type: string, regex: x}"), "agent.actions[0].params[0].regex", "unknown key"},
		{"param without name", param("{type: string}"), "agent.actions[0].params[0]", `parameter name ""`},
		{"bad param name", param("{name: 'p q', type: string}"), "agent.actions[0].params[0]", "want a letter"},
		{"reserved param", param("{name: phase, type: string}"), "agent.actions[0].params[0]", "reserved"},
		{"param without type", param("{name: p}"), "agent.actions[0].params[0]", "unknown type"},
		{"bad param type", param("{name: p, type: float}"), "agent.actions[0].params[0]", `unknown type "float"`},
		{"bad pattern", param("{name: p, type: string, pattern: '(['}"), "agent.actions[0].params[0]", "pattern"},
		{"min above max", param("{name: p, type: int, min: 5, max: 1}"), "agent.actions[0].params[0]", "min is above max"},
		{"min not a number", param("{name: p, type: int, min: few}"), "agent.actions[0].params[0].min", "want a number"},
		{"max not a number", param("{name: p, type: number, max: lots}"), "agent.actions[0].params[0].max", "want a number"},
		{"min on a string", param("{name: p, type: string, min: 1}"), "agent.actions[0].params[0]", "min and max are for int and number"},
		{"pattern on an int", param("{name: p, type: int, pattern: x}"), "agent.actions[0].params[0]", "pattern and max_length are for strings"},
		{"bad max_length", param("{name: p, type: string, max_length: -1}"), "agent.actions[0].params[0].max_length", "want a whole number"},
		{"huge max_length", param("{name: p, type: string, max_length: 100000}"), "agent.actions[0].params[0]", "max_length must be"},
		{"enum without values", param("{name: p, type: enum}"), "agent.actions[0].params[0]", "an enum needs values"},
		{"values on a string", param("{name: p, type: string, values: [a]}"), "agent.actions[0].params[0]", "values are for enum"},
		{"bad required", param("{name: p, type: string, required: yes}"), "agent.actions[0].params[0].required", "want true or false"},
		{"required with default", param("{name: p, type: string, required: true, default: x}"), "agent.actions[0].params[0]", "a required parameter has no default"},
		{"bad default", param("{name: p, type: int, default: x}"), "agent.actions[0].params[0]", "default"},
		{"default out of range", param("{name: p, type: int, max: 3, default: '5'}"), "agent.actions[0].params[0]", "above the maximum 3"},
		{"bad allow_dash", param("{name: p, type: string, allow_dash: yes}"), "agent.actions[0].params[0].allow_dash", "want true or false"},
		{"allow_dash on an int", param("{name: p, type: int, allow_dash: true}"), "agent.actions[0].params[0]", "allow_dash is for strings"},
		{"allow_control_chars on an enum", param("{name: p, type: enum, values: [a], allow_control_chars: true}"), "agent.actions[0].params[0]", "allow_control_chars is for strings"},
		{"default with a dash", param("{name: p, type: string, default: '-v'}"), "agent.actions[0].params[0]", "starts with '-'"},
		{"negative default without min", param("{name: p, type: int, default: '-1'}"), "agent.actions[0].params[0]", "negative values need a min below 0"},
		{"default with a newline", param(`{name: p, type: string, default: "a\nb"}`), "agent.actions[0].params[0]", "control character U+000A"},
		{"duplicate params", param("{name: p, type: string}, {name: P, type: int}"), "agent.actions[0].params", "declared twice"},
		{"too many params", param(many(33, func(i int) string { return fmt.Sprintf("{name: p%d, type: string}", i) })), "agent.actions[0].params", "at most 32"},
		{"params with one variable", param("{name: a-b, type: string}, {name: a_b, type: string}"), "agent.actions[0].params", "would both be $SWITCHBOARD_PARAM_A_B"},
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
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *ConfigError", err)
			}
		})
	}
}

// TestAgentConfigLines: problems in the agent section name their lines.
func TestAgentConfigLines(t *testing.T) {
	dir := configDir(t)
	_, err := parse(t, dir, `url: http://x
token_file: tok
agent:
  id: c1
  state_dir: state
  actions:
    - name: a
      command: [/bin/echo, "{nope}"]
      timeout: 1m
      params:
        - {name: p, type: int, min: 3, max: 1}
`)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"agent.actions[0].command[1] (line 8)", "agent.actions[0].params[0] (line 11)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from %q", want, err)
		}
	}
}

// TestNewMakesStateDir: New creates the state directory, keeps stored
// results, and removes the directories of runs that a stop interrupted.
func TestNewMakesStateDir(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	cfg := &Config{URL: "http://127.0.0.1:1", TokenFile: writeFile(t, "tok", "a.b.c"), Agent: &AgentConfig{ID: "c1", StateDir: state,
		Actions: []ActionConfig{act("a", time.Minute, "/bin/true")}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"results", "runs"} {
		if st, err := os.Stat(filepath.Join(state, d)); err != nil || !st.IsDir() {
			t.Fatalf("%s: %v", d, err)
		}
	}
	os.MkdirAll(filepath.Join(state, "runs", "interrupted", "output"), 0o700)
	os.MkdirAll(filepath.Join(state, "runs", "done", "output"), 0o700)
	os.WriteFile(filepath.Join(state, "results", "done.json"), []byte(`{"type":"result","job":"done","outcome":"succeeded"}`), 0o600)
	os.WriteFile(filepath.Join(state, "results", "broken.json"), []byte(`{`), 0o600)
	os.WriteFile(filepath.Join(state, "results", ".x.123.tmp"), []byte(`{`), 0o600)
	a, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stateFiles(t, state); !slices.Equal(got, []string{"results/broken.json.bad", "results/done.json", "runs/done"}) {
		t.Fatalf("state %q", got)
	}
	if len(a.jobs.pending) != 1 || a.jobs.pending["done"] == nil || *status(t, a, "agent").Local.ResultsPending != 1 {
		t.Fatalf("pending %v", a.jobs.pending)
	}
}
