// Package jobproto is the wire contract of the agent control channel: the
// JSON messages a host agent and the hub exchange over the websocket opened
// with prefix "agent" (docs/jobs.md, "Agent control channel"), and the
// declarations of the actions an agent offers, with the validation of their
// parameters that both sides apply.
//
// Every message is one JSON object in one text frame, with a "type" field
// naming it, except a log chunk (logchunk.go): a Log header and a block of
// output lines in one binary frame, sent to hubs that ask for it. A side that receives a type it does not know ignores it, so
// either side can add message types without breaking the other.
//
// The package imports the standard library only: both internal/agent and
// internal/jobs use it.
package jobproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Message types. Agent → hub: Hello, Started, Log, Result. Hub → agent:
// Welcome, Run, Abort, Ack.
const (
	TypeHello   = "hello"
	TypeWelcome = "welcome"
	TypeRun     = "run"
	TypeStarted = "started"
	TypeLog     = "log"
	TypeResult  = "result"
	TypeAck     = "ack"
	TypeAbort   = "abort"
)

// Limits both sides enforce.
const (
	// MaxMessageBytes bounds one control message.
	MaxMessageBytes = 512 << 10
	// MaxActions bounds the actions one agent declares.
	MaxActions = 64
	// MaxParams bounds the parameters of one action.
	MaxParams = 32
	// MaxLabels bounds the labels of one agent.
	MaxLabels = 32
	// MaxParamValueBytes bounds one parameter value.
	MaxParamValueBytes = 4096
	// MaxTailBytes bounds each of the stdout and stderr tails of a result.
	MaxTailBytes = 16 << 10
	// MaxMetricsBytes bounds the metrics object of a result.
	MaxMetricsBytes = 256 << 10
	// MaxFiles bounds the output files of one run.
	MaxFiles = 256
	// MaxLogLines bounds the lines of one Log message.
	MaxLogLines = 256
	// MaxLogLineBytes bounds one log line; longer lines are cut.
	MaxLogLineBytes = 4096
)

// Envelope is decoded first to learn a message's type.
type Envelope struct {
	Type string `json:"type"`
}

// Hello is the agent's first message: who it is and what it offers.
type Hello struct {
	Type    string   `json:"type"` // TypeHello
	Agent   string   `json:"agent"`
	Labels  []string `json:"labels,omitempty"` // "key=value", each allowed by the token
	Actions []Action `json:"actions,omitempty"`
	Version string   `json:"version,omitempty"`
	// Running lists the jobs the agent is running now (after a reconnect):
	// the hub keeps those runs alive instead of marking them lost.
	Running []string `json:"running,omitempty"`
	// Results lists the jobs whose results the agent holds and sends
	// after the welcome: finished runs not yet acknowledged, and runs it
	// found interrupted when it started (Result.Interrupted).
	Results []string `json:"results,omitempty"`
	// ReportsInterrupted says that Running and Results together are every
	// run this agent still knows of: a run the hub gave it that it lists
	// in neither is gone, and the hub marks it lost at once instead of
	// after the lost grace period. Agents without it are given the grace
	// period.
	ReportsInterrupted bool `json:"reports_interrupted,omitempty"`
}

// Welcome answers Hello.
type Welcome struct {
	Type string `json:"type"` // TypeWelcome
	Node string `json:"node"`
	// MaxFileBytes and MaxRunBytes bound one uploaded output file and all
	// of one run's files together.
	MaxFileBytes int64 `json:"max_file_bytes"`
	MaxRunBytes  int64 `json:"max_run_bytes"`
	// LogChunks says the hub takes runs' output as log chunks
	// (logchunk.go), which agents then send instead of Log messages with
	// Lines; absent (older hubs), agents send those.
	LogChunks bool `json:"log_chunks,omitempty"`
}

// Run asks the agent to run an action for a job. Params are validated by
// the hub against the agent's declaration, and again by the agent.
type Run struct {
	Type   string            `json:"type"` // TypeRun
	Job    string            `json:"job"`
	Action string            `json:"action"`
	Params map[string]string `json:"params,omitempty"`
	// Timeout, if positive, is shorter than the action's own timeout: the
	// job's remaining execution duration.
	Timeout Duration `json:"timeout,omitempty"`
}

// Started tells the hub that a run's process started.
type Started struct {
	Type      string    `json:"type"` // TypeStarted
	Job       string    `json:"job"`
	StartedAt time.Time `json:"started_at"`
}

// Log carries output lines of a running job. Agents send it with Lines
// to hubs that do not take log chunks (Welcome.LogChunks); a log chunk's
// header is a Log without Lines. Hubs take both.
type Log struct {
	Type   string   `json:"type"` // TypeLog
	Job    string   `json:"job"`
	Stream string   `json:"stream"` // StreamStdout or StreamStderr
	Lines  []string `json:"lines"`
}

// Output streams of Log.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// Outcome says how a run ended.
type Outcome string

// Outcomes of Result.
const (
	OutcomeSucceeded Outcome = "succeeded" // exit status 0
	OutcomeFailed    Outcome = "failed"    // non-zero exit status, or the process could not start
	OutcomeAborted   Outcome = "aborted"   // the hub asked (Abort)
	OutcomeTimedOut  Outcome = "timed_out" // the timeout killed it
	OutcomeRejected  Outcome = "rejected"  // the agent refused the Run (unknown action, bad params, busy)
)

// Valid reports whether o is a known outcome.
func (o Outcome) Valid() bool {
	switch o {
	case OutcomeSucceeded, OutcomeFailed, OutcomeAborted, OutcomeTimedOut, OutcomeRejected:
		return true
	}
	return false
}

// Result reports a finished run. The agent keeps it on disk and sends it
// again after every reconnect until the hub answers Ack. The files listed
// are uploaded (HTTP PUT, docs/jobs.md) before the Result is sent.
type Result struct {
	Type      string          `json:"type"` // TypeResult
	Job       string          `json:"job"`
	Outcome   Outcome         `json:"outcome"`
	ExitCode  int             `json:"exit_code"` // -1 when killed by a signal or never started
	Error     string          `json:"error,omitempty"`
	StartedAt time.Time       `json:"started_at"`
	EndedAt   time.Time       `json:"ended_at"`
	Stdout    string          `json:"stdout_tail,omitempty"` // last MaxTailBytes
	Stderr    string          `json:"stderr_tail,omitempty"`
	Metrics   json.RawMessage `json:"metrics,omitempty"` // a JSON object, from $SWITCHBOARD_RESULT
	Files     []File          `json:"files,omitempty"`
	// Interrupted marks a run the agent did not see end: the agent died
	// (crash, kill -9) or stopped while it ran, killed what was left of
	// its process group when it started again, and reports the metrics the
	// action had written to $SWITCHBOARD_RESULT so far and the output
	// tails it had kept. Outcome is then OutcomeFailed, so that a hub that
	// does not know this field records a failed run; a hub that does
	// records the run lost.
	Interrupted bool `json:"interrupted,omitempty"`
}

// File describes an uploaded output file.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// Ack tells the agent that the hub stored a Result: the agent may forget
// it. The hub also acks a Result for a job it no longer knows. With Error
// set the hub could not take the result (a file missing or damaged): the
// agent uploads the files again and re-sends later.
type Ack struct {
	Type  string `json:"type"` // TypeAck
	Job   string `json:"job"`
	Error string `json:"error,omitempty"`
}

// Abort asks the agent to kill a job's process group.
type Abort struct {
	Type   string `json:"type"` // TypeAbort
	Job    string `json:"job"`
	Reason string `json:"reason,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("90s") and also reads a number of seconds.
type Duration time.Duration

// MarshalJSON writes d as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1m30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			return fmt.Errorf("duration %q: want a non-negative Go duration such as 90s", s)
		}
		*d = Duration(v)
		return nil
	}
	var n float64
	if err := json.Unmarshal(b, &n); err != nil || n < 0 || n > math.MaxInt64/float64(time.Second) {
		return errors.New("duration: want a string such as \"90s\" or a non-negative number of seconds")
	}
	*d = Duration(n * float64(time.Second))
	return nil
}

// ParamType is the type of an action parameter.
type ParamType string

// Parameter types.
const (
	ParamString ParamType = "string" // any text, optionally matching Pattern, MaxLength bytes
	ParamInt    ParamType = "int"    // a decimal integer within Min..Max
	ParamNumber ParamType = "number" // a decimal number within Min..Max
	ParamBool   ParamType = "bool"   // true or false
	ParamEnum   ParamType = "enum"   // one of Values
)

// Param declares one parameter of an action.
type Param struct {
	Name        string    `json:"name"`
	Type        ParamType `json:"type"`
	Description string    `json:"description,omitempty"`
	Required    bool      `json:"required,omitempty"`
	Default     string    `json:"default,omitempty"` // used when not required and not given
	Pattern     string    `json:"pattern,omitempty"` // string: an RE2 the whole value must match
	MaxLength   int       `json:"max_length,omitempty"`
	Min         *float64  `json:"min,omitempty"` // int, number
	Max         *float64  `json:"max,omitempty"`
	Values      []string  `json:"values,omitempty"` // enum
	// AllowDash lets a string value start with '-'. Without it such a
	// value is refused: in an argument of its own a program would read it
	// as an option (ssh -oProxyCommand=…, env -S…) and run what the
	// declaration never named. Int and number values may start with '-'
	// only when Min is below zero.
	AllowDash bool `json:"allow_dash,omitempty"`
	// AllowControlChars lets a string value hold control characters:
	// U+0001..U+001F other than tab, and U+007F (NUL is never allowed).
	// Without it they are refused: they end lines in logs and files and
	// drive terminals.
	AllowControlChars bool `json:"allow_control_chars,omitempty"`
}

// Action declares what an agent can be asked to run. Command and Env stay
// on the agent: the hub only sees the name, the parameters and the timeout.
type Action struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Params      []Param  `json:"params,omitempty"`
	Timeout     Duration `json:"timeout"`
	// MaxConcurrent is how many runs of this action the agent runs at
	// once (0 means DefaultMaxConcurrent); the hub queues the others and
	// sends each when a run ends. Per agent: not part of Equal.
	MaxConcurrent int `json:"max_concurrent,omitempty"`
}

// DefaultMaxConcurrent is an action's MaxConcurrent when it declares
// none; MaxMaxConcurrent bounds a declaration.
const (
	DefaultMaxConcurrent = 1
	MaxMaxConcurrent     = 1024
)

// Concurrency returns how many runs of the action may run at once on the
// agent that declares it.
func (a *Action) Concurrency() int {
	if a.MaxConcurrent <= 0 {
		return DefaultMaxConcurrent
	}
	return a.MaxConcurrent
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

// ValidName reports whether s is a valid action or parameter name: a letter
// then up to 63 letters, digits, '_' or '-'. UWS reserves some parameter
// names (RUNID, PHASE, …); ReservedParam reports them.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ReservedParam reports whether name (any case) is a UWS or job-API control
// parameter that an action may not declare.
func ReservedParam(name string) bool {
	switch strings.ToUpper(name) {
	case "PHASE", "RUNID", "ACTION", "TARGETS", "EXECUTIONDURATION", "DESTRUCTION", "QUOTE", "OWNER", "WAIT", "AFTER", "LAST", "REQUIRE", "LABEL":
		return true
	}
	return false
}

// Validate checks a declaration: names, types, bounds, pattern, default.
func (a *Action) Validate() error {
	if !ValidName(a.Name) {
		return fmt.Errorf("action name %q: want a letter then up to 63 letters, digits, _ or -", a.Name)
	}
	if a.MaxConcurrent < 0 || a.MaxConcurrent > MaxMaxConcurrent {
		return fmt.Errorf("action %s: max_concurrent must be between 1 and %d", a.Name, MaxMaxConcurrent)
	}
	if a.Timeout <= 0 {
		return fmt.Errorf("action %s: timeout must be positive", a.Name)
	}
	if len(a.Params) > MaxParams {
		return fmt.Errorf("action %s: %d parameters, at most %d", a.Name, len(a.Params), MaxParams)
	}
	seen := map[string]bool{}
	for i := range a.Params {
		p := &a.Params[i]
		if err := p.validate(); err != nil {
			return fmt.Errorf("action %s: %w", a.Name, err)
		}
		if seen[strings.ToLower(p.Name)] {
			return fmt.Errorf("action %s: parameter %s declared twice", a.Name, p.Name)
		}
		seen[strings.ToLower(p.Name)] = true
	}
	return nil
}

func (p *Param) validate() error {
	if !ValidName(p.Name) {
		return fmt.Errorf("parameter name %q: want a letter then up to 63 letters, digits, _ or -", p.Name)
	}
	if ReservedParam(p.Name) {
		return fmt.Errorf("parameter name %q is reserved by the job API", p.Name)
	}
	switch p.Type {
	case ParamString:
		if p.Pattern != "" {
			if _, err := regexp.Compile(p.Pattern); err != nil {
				return fmt.Errorf("parameter %s: pattern: %v", p.Name, err)
			}
		}
		if p.MaxLength < 0 || p.MaxLength > MaxParamValueBytes {
			return fmt.Errorf("parameter %s: max_length must be 0..%d", p.Name, MaxParamValueBytes)
		}
	case ParamInt, ParamNumber:
		if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
			return fmt.Errorf("parameter %s: min is above max", p.Name)
		}
	case ParamBool:
	case ParamEnum:
		if len(p.Values) == 0 {
			return fmt.Errorf("parameter %s: an enum needs values", p.Name)
		}
	default:
		return fmt.Errorf("parameter %s: unknown type %q (want string, int, number, bool or enum)", p.Name, p.Type)
	}
	if p.Type != ParamString && (p.Pattern != "" || p.MaxLength != 0) {
		return fmt.Errorf("parameter %s: pattern and max_length are for strings", p.Name)
	}
	if p.Type != ParamInt && p.Type != ParamNumber && (p.Min != nil || p.Max != nil) {
		return fmt.Errorf("parameter %s: min and max are for int and number", p.Name)
	}
	if p.Type != ParamEnum && len(p.Values) > 0 {
		return fmt.Errorf("parameter %s: values are for enum", p.Name)
	}
	if p.Type != ParamString && p.AllowDash {
		return fmt.Errorf("parameter %s: allow_dash is for strings (int and number take negative values when min is below 0)", p.Name)
	}
	if p.Type != ParamString && p.AllowControlChars {
		return fmt.Errorf("parameter %s: allow_control_chars is for strings", p.Name)
	}
	if p.Required && p.Default != "" {
		return fmt.Errorf("parameter %s: a required parameter has no default", p.Name)
	}
	if p.Default != "" {
		if err := p.Check(p.Default); err != nil {
			return fmt.Errorf("parameter %s: default: %w", p.Name, err)
		}
	}
	return nil
}

// ParamError is a parameter that fails its declaration.
type ParamError struct {
	Param  string
	Reason string
}

func (e *ParamError) Error() string { return "parameter " + e.Param + ": " + e.Reason }

// Check reports whether v is a valid value of p.
func (p *Param) Check(v string) error {
	fail := func(format string, args ...any) error {
		return &ParamError{Param: p.Name, Reason: fmt.Sprintf(format, args...)}
	}
	if len(v) > MaxParamValueBytes {
		return fail("longer than %d bytes", MaxParamValueBytes)
	}
	switch p.Type {
	case ParamString:
		if p.MaxLength > 0 && len(v) > p.MaxLength {
			return fail("longer than %d bytes", p.MaxLength)
		}
		if strings.ContainsRune(v, 0) {
			return fail("contains a NUL byte")
		}
		if !utf8.ValidString(v) {
			return fail("is not valid UTF-8")
		}
		if i := controlChar(v); i >= 0 && !p.AllowControlChars {
			return fail("contains the control character U+%04X (the declaration does not set allow_control_chars)", v[i])
		}
		if strings.HasPrefix(v, "-") && !p.AllowDash {
			return fail("starts with '-', which the program could read as an option (the declaration does not set allow_dash)")
		}
		if p.Pattern != "" {
			re, err := regexp.Compile(p.Pattern)
			if err != nil || !fullMatch(re, v) {
				return fail("does not match %s", p.Pattern)
			}
		}
	case ParamInt:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fail("%q is not an integer", short(v))
		}
		return p.checkRange(v, float64(n), fail)
	case ParamNumber:
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
			return fail("%q is not a number", short(v))
		}
		return p.checkRange(v, n, fail)
	case ParamBool:
		if v != "true" && v != "false" {
			return fail("want true or false")
		}
	case ParamEnum:
		if !slices.Contains(p.Values, v) {
			return fail("want one of %s", strings.Join(p.Values, ", "))
		}
	default:
		return fail("unknown type %q", p.Type)
	}
	return nil
}

// checkRange checks n, read from v, against Min and Max. A value written
// with a leading '-' ("-5", "-0", "-1e3") is an option to many programs
// (head -5, kill -9): it is taken only when the declaration says negative
// values are meant, with a Min below zero.
func (p *Param) checkRange(v string, n float64, fail func(string, ...any) error) error {
	if p.Min != nil && n < *p.Min {
		return fail("below the minimum %s", strconv.FormatFloat(*p.Min, 'g', -1, 64))
	}
	if p.Max != nil && n > *p.Max {
		return fail("above the maximum %s", strconv.FormatFloat(*p.Max, 'g', -1, 64))
	}
	if strings.HasPrefix(v, "-") && (p.Min == nil || *p.Min >= 0) {
		return fail("starts with '-', which the program could read as an option (negative values need a min below 0)")
	}
	return nil
}

// controlChar returns the index of the first control character in v that
// a declaration must allow (below 0x20 except tab, and 0x7f), or -1. Bytes
// below 0x80 never occur inside a multi-byte UTF-8 sequence, so a byte scan
// finds exactly the control code points.
func controlChar(v string) int {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return i
		}
	}
	return -1
}

// fullMatch reports whether re matches the whole of v. With leftmost-
// longest semantics the match found starts at the leftmost possible
// position and is the longest there, so it spans v exactly when some match
// of re does: no rewriting of the pattern's text, which a pattern could
// escape.
func fullMatch(re *regexp.Regexp, v string) bool {
	re.Longest()
	loc := re.FindStringIndex(v)
	return loc != nil && loc[0] == 0 && loc[1] == len(v)
}

func short(v string) string {
	if len(v) > 40 {
		return v[:40] + "…"
	}
	return v
}

// CheckParams validates given against a's declaration and returns the
// values to run with: every declared parameter that is given or has a
// default. Parameter names match case-insensitively (UWS parameter names
// are case-insensitive); the result uses the declared spelling. Unknown
// parameters and missing required ones are errors (*ParamError).
func (a *Action) CheckParams(given map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(a.Params))
	used := 0
	for i := range a.Params {
		p := &a.Params[i]
		v, ok := lookupFold(given, p.Name)
		if !ok {
			if p.Required {
				return nil, &ParamError{Param: p.Name, Reason: "is required"}
			}
			if p.Default != "" {
				out[p.Name] = p.Default
			}
			continue
		}
		used++
		if err := p.Check(v); err != nil {
			return nil, err
		}
		out[p.Name] = v
	}
	if used != len(given) {
		for k := range given {
			if a.param(k) == nil {
				return nil, &ParamError{Param: k, Reason: "is not a parameter of action " + a.Name}
			}
		}
		return nil, &ParamError{Param: "?", Reason: "given more than once in different case"}
	}
	return out, nil
}

func (a *Action) param(name string) *Param {
	for i := range a.Params {
		if strings.EqualFold(a.Params[i].Name, name) {
			return &a.Params[i]
		}
	}
	return nil
}

func lookupFold(m map[string]string, name string) (string, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// Equal reports whether a and b declare the same interface (name,
// parameters, timeout); descriptions are ignored.
func (a *Action) Equal(b *Action) bool {
	if a.Name != b.Name || a.Timeout != b.Timeout || len(a.Params) != len(b.Params) {
		return false
	}
	for i := range a.Params {
		p, q := a.Params[i], b.Params[i]
		p.Description, q.Description = "", ""
		pj, _ := json.Marshal(p)
		qj, _ := json.Marshal(q)
		if string(pj) != string(qj) {
			return false
		}
	}
	return true
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}=[A-Za-z0-9._:/-]{0,128}$`)

// ValidLabel reports whether s is a label "key=value": key 1-63 of
// [A-Za-z0-9._-] starting alphanumeric, value up to 128 of
// [A-Za-z0-9._:/-].
func ValidLabel(s string) bool { return labelRE.MatchString(s) }

var fileNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// ValidFileName reports whether s can name an output file: 1-128 of
// [A-Za-z0-9._-], not starting with '.' or '-'.
func ValidFileName(s string) bool { return fileNameRE.MatchString(s) }
