package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// AgentPrefix is the connection type of the agent control channel
// (pkg/wire).
const AgentPrefix = wire.PrefixAgent

// AgentConfig is the optional `agent:` section: the host's identity on the
// hub's agent control channel and the actions it offers (docs/jobs.md).
type AgentConfig struct {
	// ID is the agent's id and the control channel's topic;
	// [A-Za-z0-9._-]{1,64}. Required.
	ID string
	// TokenFile overrides Config.TokenFile (a token with prefix agent,
	// scope agent, claim agent = ID).
	TokenFile string
	// Labels are claimed on the hub ("key=value", keys unique).
	Labels []string
	// StateDir holds the runs' directories and the results not yet
	// acknowledged. Required when Actions is not empty.
	StateDir string
	// Actions are what the hub may ask this agent to run.
	Actions []ActionConfig
}

// ActionConfig declares one action: what the hub sees (the embedded
// jobproto.Action: name, description, parameters, timeout) and what stays
// on this host (the command and its environment).
type ActionConfig struct {
	jobproto.Action
	// Command is the argv, without a shell. Arguments after the first may
	// hold {param} placeholders, each replaced inside its argument by the
	// parameter's value; {{ and }} stand for literal braces.
	Command []string
	// Env are fixed variables of the process's environment.
	Env map[string]string
	// PassEnv names variables copied from the agent's own environment
	// (those it does not have are left out).
	PassEnv []string
	// Dir is the working directory; "" means a fresh directory per run
	// under StateDir.
	Dir string
}

var (
	agentKeys  = []string{"id", "token_file", "labels", "state_dir", "actions"}
	actionKeys = []string{"name", "description", "command", "timeout", "env", "pass_env", "dir", "params", "max_concurrent"}
	paramKeys  = []string{"name", "type", "description", "required", "default", "pattern", "max_length", "min", "max", "values", "allow_dash", "allow_control_chars"}
)

func (d *decoder) agent(n *yaml.Node, path string) *AgentConfig {
	ac := &AgentConfig{}
	d.mapping(n, path, agentKeys, func(key string, v *yaml.Node, p string) {
		switch key {
		case "id":
			ac.ID = d.str(v, p)
		case "token_file":
			ac.TokenFile = d.str(v, p)
		case "labels":
			ac.Labels = d.strList(v, p)
		case "state_dir":
			ac.StateDir = d.str(v, p)
		case "actions":
			d.list(v, p, "actions", func(a *yaml.Node, ap string) { ac.Actions = append(ac.Actions, d.action(a, ap)) })
		}
	})
	return ac
}

func (d *decoder) action(n *yaml.Node, path string) ActionConfig {
	var a ActionConfig
	d.mapping(n, path, actionKeys, func(key string, v *yaml.Node, p string) {
		switch key {
		case "name":
			a.Name = d.str(v, p)
		case "description":
			a.Description = d.str(v, p)
		case "command":
			a.Command = d.strList(v, p)
		case "timeout":
			a.Timeout = jobproto.Duration(d.duration(v, p))
		case "max_concurrent": // runs at once on this host; the hub queues the rest
			if a.MaxConcurrent = d.int(v, p); a.MaxConcurrent > jobproto.MaxMaxConcurrent {
				d.fail(p, v, "at most %d (default %d)", jobproto.MaxMaxConcurrent, jobproto.DefaultMaxConcurrent)
			}
		case "env":
			a.Env = d.env(v, p)
		case "pass_env":
			a.PassEnv = d.strList(v, p)
		case "dir":
			a.Dir = d.str(v, p)
		case "params":
			a.Params = []jobproto.Param{} // declared, even if empty
			d.list(v, p, "parameters", func(e *yaml.Node, ep string) { a.Params = append(a.Params, d.param(e, ep)) })
		}
	})
	return a
}

func (d *decoder) param(n *yaml.Node, path string) jobproto.Param {
	var p jobproto.Param
	d.mapping(n, path, paramKeys, func(key string, v *yaml.Node, kp string) {
		switch key {
		case "name":
			p.Name = d.str(v, kp)
		case "type":
			p.Type = jobproto.ParamType(d.str(v, kp))
		case "description":
			p.Description = d.str(v, kp)
		case "required":
			p.Required = d.bool(v, kp)
		case "default":
			p.Default = d.str(v, kp)
		case "pattern":
			p.Pattern = d.str(v, kp)
		case "max_length":
			s := d.str(v, kp)
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				d.fail(kp, v, "want a whole number of bytes, got %q", s)
			}
			p.MaxLength = n
		case "min":
			p.Min = d.number(v, kp)
		case "max":
			p.Max = d.number(v, kp)
		case "values":
			p.Values = d.strList(v, kp)
		case "allow_dash":
			p.AllowDash = d.bool(v, kp)
		case "allow_control_chars":
			p.AllowControlChars = d.bool(v, kp)
		}
	})
	return p
}

// env decodes a mapping of environment variable names to values.
func (d *decoder) env(v *yaml.Node, p string) map[string]string {
	env := map[string]string{}
	if v.Kind != yaml.MappingNode {
		d.fail(p, v, "want a mapping of variable names to values")
		return env
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		name := v.Content[i].Value
		if _, dup := env[name]; dup {
			d.fail(p+"."+name, v.Content[i], "given twice")
		}
		env[name] = d.str(v.Content[i+1], p+"."+name)
	}
	return env
}

func (d *decoder) bool(n *yaml.Node, path string) bool {
	switch s := d.str(n, path); s {
	case "true":
		return true
	case "false", "":
		return false
	default:
		d.fail(path, n, "want true or false, got %q", s)
		return false
	}
}

func (d *decoder) number(n *yaml.Node, path string) *float64 {
	s := d.str(n, path)
	if s == "" {
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		d.fail(path, n, "want a number, got %q", s)
		return nil
	}
	return &v
}

func (d *decoder) duration(n *yaml.Node, path string) time.Duration {
	s := d.str(n, path)
	if s == "" {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		d.fail(path, n, "want a positive duration such as 90s, 10m or 2h, got %q", s)
		return 0
	}
	return v
}

// validateAgent checks the agent section; fail and resolve are validate's,
// checkToken checks a token file (resolved).
func (c *Config) validateAgent(fail func(path, format string, args ...any), resolve func(string) string, checkToken func(path, file string)) {
	ac := c.Agent
	switch {
	case ac.ID == "":
		fail("agent.id", "required: the agent's id, its control channel's topic")
	case !jobproto.ValidAgentID(ac.ID): // the hub's enrolment accepts the same ids
		fail("agent.id", "%q: want 1-64 characters from A-Z a-z 0-9 . _ -, not . or ..", ac.ID)
	default:
		if err := topic.Valid(ac.ID); err != nil {
			fail("agent.id", "%q: %v", ac.ID, err)
		}
	}
	ac.TokenFile = resolve(ac.TokenFile)
	switch {
	case ac.TokenFile != "":
		checkToken("agent.token_file", ac.TokenFile)
	case c.TokenFile == "":
		fail("agent.token_file", "required (no token_file at the top level)")
	}
	if len(ac.Labels) > jobproto.MaxLabels {
		fail("agent.labels", "%d labels: at most %d", len(ac.Labels), jobproto.MaxLabels)
	}
	keys := map[string]int{}
	for i, l := range ac.Labels {
		p := fmt.Sprintf("agent.labels[%d]", i)
		if !jobproto.ValidLabel(l) {
			fail(p, "%q: want key=value (key: 1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit; value: up to 128 of A-Z a-z 0-9 . _ : / -)", l)
			continue
		}
		k, _, _ := strings.Cut(l, "=")
		if j, dup := keys[k]; dup {
			fail(p, "the key %q is also in agent.labels[%d]", k, j)
		}
		keys[k] = i
	}
	if ac.StateDir != "" {
		ac.StateDir = resolve(ac.StateDir)
		if st, err := os.Stat(ac.StateDir); err == nil && !st.IsDir() {
			fail("agent.state_dir", "%s is not a directory", ac.StateDir)
		}
	} else if len(ac.Actions) > 0 {
		fail("agent.state_dir", "required with actions: the directory of the runs and of the results not yet acknowledged")
	}
	if len(ac.Actions) > jobproto.MaxActions {
		fail("agent.actions", "%d actions: at most %d", len(ac.Actions), jobproto.MaxActions)
	}
	names := map[string]int{}
	for i := range ac.Actions {
		a := &ac.Actions[i]
		p := fmt.Sprintf("agent.actions[%d]", i)
		if a.Name != "" {
			if j, dup := names[a.Name]; dup {
				fail(p+".name", "%q is also the name of agent.actions[%d]", a.Name, j)
			}
			names[a.Name] = i
		}
		a.validate(p, fail, resolve)
	}
}

// validate checks one action: its declaration with jobproto's rules, its
// command and placeholders, its environment and directory.
func (a *ActionConfig) validate(p string, fail func(path, format string, args ...any), resolve func(string) string) {
	label := "action " + a.Name + ": "
	switch {
	case a.Name == "":
		fail(p+".name", "required")
	case !jobproto.ValidName(a.Name):
		fail(p+".name", "%q: want a letter then up to 63 letters, digits, _ or -", a.Name)
	}
	if a.Timeout <= 0 {
		fail(p+".timeout", "required: the longest a run may take, e.g. 10m")
	}
	// jobproto's checks, parameter by parameter (so that a problem names
	// its parameter's key and line), then together (duplicates, count).
	name := a.Name
	if !jobproto.ValidName(name) {
		name = "a"
	}
	var valid []jobproto.Param
	for j := range a.Params {
		one := jobproto.Action{Name: name, Timeout: 1, Params: a.Params[j : j+1]}
		if err := one.Validate(); err != nil {
			fail(fmt.Sprintf("%s.params[%d]", p, j), "%s", strings.TrimPrefix(err.Error(), "action "+name+": "))
		} else {
			valid = append(valid, a.Params[j])
		}
	}
	paramsOK := len(valid) == len(a.Params)
	all := jobproto.Action{Name: name, Timeout: 1, Params: valid}
	if err := all.Validate(); err != nil {
		fail(p+".params", "%s", strings.TrimPrefix(err.Error(), "action "+name+": "))
		paramsOK = false
	}
	if paramsOK && jobproto.ValidName(a.Name) && a.Timeout > 0 {
		if err := a.Action.Validate(); err != nil { // anything jobproto adds later
			fail(p, "%s", strings.TrimPrefix(err.Error(), label))
		}
	}
	envNames := map[string]string{}
	for _, pr := range a.Params {
		v := paramEnv(pr.Name)
		if other, dup := envNames[v]; dup && !strings.EqualFold(other, pr.Name) {
			fail(p+".params", "parameters %s and %s would both be $%s", other, pr.Name, v)
		}
		envNames[v] = pr.Name
	}

	// The command: a fixed program, placeholders only in its arguments.
	if len(a.Command) == 0 || a.Command[0] == "" {
		fail(p+".command", "required: the program and its arguments as a list, e.g. [/usr/local/bin/fetch, \"{server}\"]")
	} else {
		if strings.ContainsAny(a.Command[0], "{}") {
			fail(p+".command[0]", "%q: the program cannot hold placeholders or braces", a.Command[0])
		} else {
			if strings.ContainsRune(a.Command[0], filepath.Separator) {
				a.Command[0] = resolve(a.Command[0])
			}
			lp, err := exec.LookPath(a.Command[0])
			if err == nil && !filepath.IsAbs(lp) {
				lp, err = filepath.Abs(lp)
			}
			if err != nil {
				fail(p+".command[0]", "%v", err)
			} else {
				a.Command[0] = lp
			}
		}
		for i, arg := range a.Command[1:] {
			ap := fmt.Sprintf("%s.command[%d]", p, i+1)
			parts, err := parseArg(arg)
			if err != nil {
				fail(ap, "%q: %v", arg, err)
				continue
			}
			for _, part := range parts {
				if part.param != "" && !declared(a.Params, part.param) {
					fail(ap, "{%s} is not a parameter of the action (declared: %s); write {{ and }} for literal braces", part.param, paramNames(a.Params))
				}
			}
		}
	}
	for k := range a.Env {
		if err := checkEnvName(k); err != nil {
			fail(p+".env."+k, "%v", err)
		}
	}
	seen := map[string]bool{}
	for i, k := range a.PassEnv {
		kp := fmt.Sprintf("%s.pass_env[%d]", p, i)
		switch err := checkEnvName(k); {
		case err != nil:
			fail(kp, "%v", err)
		case seen[k]:
			fail(kp, "%s is listed twice", k)
		case hasKey(a.Env, k):
			fail(kp, "%s is also set in env", k)
		}
		seen[k] = true
	}
	if a.Dir != "" {
		a.Dir = resolve(a.Dir)
		if st, err := os.Stat(a.Dir); err != nil {
			fail(p+".dir", "%v", err)
		} else if !st.IsDir() {
			fail(p+".dir", "%s is not a directory", a.Dir)
		}
	}
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

func declared(params []jobproto.Param, name string) bool {
	for _, p := range params {
		if p.Name == name {
			return true
		}
	}
	return false
}

func paramNames(params []jobproto.Param) string {
	if len(params) == 0 {
		return "none"
	}
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

// checkEnvName checks a variable name of an action's environment. Names
// starting with SWITCHBOARD_ are the agent's own.
func checkEnvName(k string) error {
	switch {
	case k == "" || strings.ContainsAny(k, "=\x00"):
		return fmt.Errorf("%q is not a valid environment variable name", k)
	case strings.HasPrefix(k, "SWITCHBOARD_"):
		return fmt.Errorf("%s: variables named SWITCHBOARD_* are set by the agent", k)
	}
	return nil
}

// paramEnv is the variable that holds a parameter's value:
// SWITCHBOARD_PARAM_ and the name upper-cased, '-' written '_'.
func paramEnv(name string) string {
	return "SWITCHBOARD_PARAM_" + strings.ReplaceAll(strings.ToUpper(name), "-", "_")
}

// argPart is a piece of a command argument: literal text, or a parameter
// to substitute.
type argPart struct {
	lit   string
	param string // non-empty: the parameter's value replaces it
}

// parseArg splits an argument into literal text and {param} placeholders;
// {{ and }} are literal braces.
func parseArg(s string) ([]argPart, error) {
	var parts []argPart
	var lit strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "{{"):
			lit.WriteByte('{')
			i += 2
		case strings.HasPrefix(s[i:], "}}"):
			lit.WriteByte('}')
			i += 2
		case s[i] == '}':
			return nil, fmt.Errorf("a lone } at byte %d (write }} for a literal brace)", i)
		case s[i] == '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("a { at byte %d is not closed (write {{ for a literal brace)", i)
			}
			name := s[i+1 : i+end]
			if !jobproto.ValidName(name) {
				return nil, fmt.Errorf("{%s} is not a placeholder: want {param} (write {{ and }} for literal braces)", name)
			}
			if lit.Len() > 0 {
				parts = append(parts, argPart{lit: lit.String()})
				lit.Reset()
			}
			parts = append(parts, argPart{param: name})
			i += end + 1
		default:
			lit.WriteByte(s[i])
			i++
		}
	}
	if lit.Len() > 0 || len(parts) == 0 {
		parts = append(parts, argPart{lit: lit.String()})
	}
	return parts, nil
}

// expandArg builds an argument from its parts and the run's parameter
// values; a parameter without a value (optional, no default) is empty.
func expandArg(parts []argPart, values map[string]string) string {
	if len(parts) == 1 && parts[0].param == "" {
		return parts[0].lit
	}
	var b strings.Builder
	for _, p := range parts {
		if p.param != "" {
			b.WriteString(values[p.param])
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}
