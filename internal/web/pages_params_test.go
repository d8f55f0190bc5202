package web

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/topic"
)

// TestParamChecksMatchServer runs the page's parameter checks
// (static/js/params.js, checks.js) under Node against the Go code they
// port: jobproto.Param.Check, strconv's number formats and quoting,
// topic.Valid and time.ParseDuration. The messages must be the same,
// byte for byte. Skipped when Node is not installed: the dashboard needs
// no Node, this test only borrows it as a JavaScript engine.
func TestParamChecksMatchServer(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("SWITCHBOARD_TEST_STRICT") == "1" {
			t.Fatal("node is not installed (Debian: nodejs); SWITCHBOARD_TEST_STRICT=1 forbids skipping")
		}
		t.Skip("node is not installed (set SWITCHBOARD_TEST_STRICT=1 to fail instead)")
	}
	f := func(v float64) *float64 { return &v }
	long := strings.Repeat("x", 5000)
	params := []jobproto.Param{
		{Name: "count", Type: jobproto.ParamInt, Min: f(1), Max: f(100)},
		{Name: "big", Type: jobproto.ParamInt, Min: f(-1e-7), Max: f(123456789)},
		{Name: "huge", Type: jobproto.ParamInt, Max: f(1e21)},
		{Name: "ratio", Type: jobproto.ParamNumber, Min: f(0.5), Max: f(1e6)},
		{Name: "tiny", Type: jobproto.ParamNumber, Min: f(0.00001), Max: f(0.0001)},
		{Name: "any", Type: jobproto.ParamNumber},
		{Name: "name", Type: jobproto.ParamString, MaxLength: 5},
		{Name: "flag", Type: jobproto.ParamBool},
		{Name: "mode", Type: jobproto.ParamEnum, Values: []string{"fast", "slow mode"}},
		{Name: "weird", Type: "date"},
		{Name: "neg", Type: jobproto.ParamInt, Min: f(-10)},
		{Name: "nonneg", Type: jobproto.ParamNumber, Min: f(0)},
		{Name: "text", Type: jobproto.ParamString},
		{Name: "opt", Type: jobproto.ParamString, AllowDash: true},
		{Name: "raw", Type: jobproto.ParamString, AllowControlChars: true},
		{Name: "mode2", Type: jobproto.ParamEnum, Values: []string{"-fast", "slow"}},
	}
	values := []string{"", "0", "1", "-5", "+5", "100", "101", "1.5", "abc", "9223372036854775807", "9223372036854775808",
		"-9223372036854775808", "1_0", " 1", "1e5", "1_000", "0x1p-2", "0x_1p2", "0x1.8p1", "0x10", "inf", "-Inf", "infinity",
		"NaN", "nan", "1e400", "1e-400", ".5", "5.", "-0", "1__0", "_1", "1_", "1e_5", "1E+2", "0.00005", "1e-5",
		"héllo", "hello", "a\x00b", "true", "false", "True", "fast", "slow mode", "Fast",
		"\u00a0x\u200b\x01\"\\\t", "ééééééééééééééééééééééééééééééééééééé", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH", long,
		"😀😀😀😀😀😀😀😀😀😀😀😀", "1e308", "-1e308", "1.7976931348623157e308",
		// Option-like values and control characters (issue 12, item 1).
		"-oProxyCommand=touch /tmp/x", "-S touch /tmp/x", "--split-string=x", "--", "-", "-0", "-0.0", "-0.5", "-1e3", "-0x1p-2",
		"-11", "-fast", "a-b", "+5", "a\nb", "\r", "\x1b[31m", "x\x7f", "tab\tok", "\x1f", "é\u0085\u2028"}
	patterns := []string{`[a-z]+`, `^[a-z]+$`, `a|ab`, `(?i)abc`, `\d{3}`, `[[:alpha:]]+`, `\pL+`, `\p{Greek}+`, `[^\s]+`,
		`\S+`, `.+`, `a{2,}`, `x{`, `\Qa.b\E`, `[]a]+`, `[a\-z]+`, `(?P<n>a)b`, `\x41+`, `\x{1F600}`, `(?s).+`, `[\d\s]+`,
		`\w+@\w+\.org`, `[a-c]{1,2}|z`, `\.\*\+`, `a/b`, `[/]`, `\A\w+\z`, `[[:^alpha:]]`, `-[a-z]+`, `(?s).+`, `[a-z0-9][a-z0-9.-]*`}
	pvalues := []string{"abc", "ABC", "abc1", "123", "12", "a", "ab", "aaa", "a.b", "axb", "ÄÖ", "αβγ", "a b", "", "x{", "]a", "-",
		"ab", "AAA", "😀", "a\nb", "1 2", "me@host.org", "z", ".*+", "a/b", "/", "a_b",
		"-abc", "-", "--abc", "data-a.example", "a\x1b"}

	type pcase struct {
		Param jobproto.Param `json:"param"`
		Value *string        `json:"value"`
		Want  string         `json:"want"`
	}
	var cases []pcase
	add := func(p jobproto.Param, v *string) {
		var want string
		if v == nil {
			a := jobproto.Action{Name: "a", Params: []jobproto.Param{p}}
			if _, err := a.CheckParams(map[string]string{}); err != nil {
				want = err.Error()
			}
		} else if err := p.Check(*v); err != nil {
			want = err.Error()
		}
		cases = append(cases, pcase{p, v, want})
	}
	for _, p := range params {
		for _, v := range values {
			add(p, &v)
		}
		p.Required = true
		add(p, nil)
	}
	for _, pat := range patterns {
		for _, p := range []jobproto.Param{
			{Name: "s", Type: jobproto.ParamString, Pattern: pat},
			{Name: "s", Type: jobproto.ParamString, Pattern: pat, AllowDash: true, AllowControlChars: true},
		} {
			for _, v := range pvalues {
				add(p, &v)
			}
		}
	}
	floats := []float64{0, 1, -1, 100, 1e6, 999999, 1234567, 0.5, 0.0001, 0.00001, 1e-7, 123456789, 1e21, 1e100, -2.5e-10,
		1.7976931348623157e308, 5e-324, 0.1, 1.0 / 3, 65536.125, math.Copysign(0, -1)}
	var floatWant []string
	for _, x := range floats {
		floatWant = append(floatWant, strconv.FormatFloat(x, 'g', -1, 64))
	}
	topics := []string{"expt42", "expt42/video0", "a//b", "/a", "a/", "", "a b", "ü", ".", "a/..", strings.Repeat("s", 65),
		strings.Repeat("a/", 130) + "a", "a'b", `a"b`, "a\x01", "jobs/x1/log", "~._-"}
	var topicWant []string
	for _, n := range topics {
		w := ""
		if err := topic.Valid(n); err != nil {
			w = err.Error()
		}
		topicWant = append(topicWant, w)
	}
	durations := []string{"90m", "1h30m", "2.5h", "-1h", "0", "", "1", "1hh", "1.h", ".5s", "1e3s", "+5m", "300ms", "1µs",
		"5 m", "1h-1m", ".", "24h", "1us", "2562047h", "2562048h"}
	var durWant []*float64
	for _, d := range durations {
		v, err := time.ParseDuration(d)
		if err != nil {
			durWant = append(durWant, nil)
			continue
		}
		s := v.Seconds()
		durWant = append(durWant, &s)
	}

	dir := t.TempDir()
	in, _ := json.Marshal(map[string]any{"params": cases, "floats": floats, "topics": topics, "durations": durations})
	if err := os.WriteFile(filepath.Join(dir, "cases.json"), in, 0o600); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs("static/js")
	if err != nil {
		t.Fatal(err)
	}
	runner := `import { readFileSync } from 'node:fs';
import { checkParam, requiredMessage, formatG, compilePattern } from ` + strconv.Quote("file://"+filepath.ToSlash(abs)+"/params.js") + `;
import { topicError, parseGoDuration } from ` + strconv.Quote("file://"+filepath.ToSlash(abs)+"/checks.js") + `;
const c = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = {
  params: c.params.map((x) => (x.value === null ? requiredMessage(x.param) : checkParam(x.param, x.value)) || ''),
  supported: c.params.map((x) => !x.param.pattern || compilePattern(x.param.pattern) !== null),
  floats: c.floats.map((x) => formatG(x)),
  topics: c.topics.map((x) => topicError(x) || ''),
  durations: c.durations.map((x) => parseGoDuration(x)),
};
process.stdout.write(JSON.stringify(out));
`
	if err := os.WriteFile(filepath.Join(dir, "run.mjs"), []byte(runner), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, filepath.Join(dir, "run.mjs"), filepath.Join(dir, "cases.json"))
	outb, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node: %v\n%s", err, stderr)
	}
	var got struct {
		Params    []string   `json:"params"`
		Supported []bool     `json:"supported"`
		Floats    []string   `json:"floats"`
		Topics    []string   `json:"topics"`
		Durations []*float64 `json:"durations"`
	}
	if err := json.Unmarshal(outb, &got); err != nil {
		t.Fatalf("node's output: %v", err)
	}
	// -0 does not survive JSON: compare it separately below.
	skippedPatterns := map[string]bool{}
	for i, c := range cases {
		if !got.Supported[i] {
			skippedPatterns[c.Param.Pattern] = true
			continue
		}
		if got.Params[i] != c.Want {
			v := "<missing>"
			if c.Value != nil {
				v = strconv.Quote(*c.Value)
				if len(v) > 60 {
					v = v[:60] + "…"
				}
			}
			t.Errorf("%s %s (pattern %q) value %s:\n  js: %q\n  go: %q", c.Param.Name, c.Param.Type, c.Param.Pattern, v, got.Params[i], c.Want)
		}
	}
	for p := range skippedPatterns {
		t.Logf("pattern %q is left to the server (no faithful JavaScript translation)", p)
	}
	for _, must := range []string{`[a-z]+`, `(?i)abc`, `[[:alpha:]]+`, `\pL+`, `\p{Greek}+`, `\S+`, `.+`, `\Qa.b\E`, `[]a]+`, `(?P<n>a)b`} {
		if skippedPatterns[must] {
			t.Errorf("pattern %q should be translated", must)
		}
	}
	for i, x := range floats {
		if x == 0 && math.Signbit(x) {
			continue // JSON has no -0
		}
		if got.Floats[i] != floatWant[i] {
			t.Errorf("formatG(%v): js %q, go %q", x, got.Floats[i], floatWant[i])
		}
	}
	for i, n := range topics {
		if got.Topics[i] != topicWant[i] {
			t.Errorf("topic %q: js %q, go %q", n, got.Topics[i], topicWant[i])
		}
	}
	for i, d := range durations {
		g, w := got.Durations[i], durWant[i]
		if (g == nil) != (w == nil) || g != nil && math.Abs(*g-*w) > 1e-9*math.Max(1, math.Abs(*w)) {
			t.Errorf("duration %q: js %v, go %v", d, fmtPtr(g), fmtPtr(w))
		}
	}
}

func fmtPtr(p *float64) string {
	if p == nil {
		return "invalid"
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}
