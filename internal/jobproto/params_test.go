package jobproto

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestCheckRefusesOptionLikeValues: a value that a program would read as
// an option (the ssh -oProxyCommand=… and env -S… attacks) is refused
// unless the declaration says such values are meant.
func TestCheckRefusesOptionLikeValues(t *testing.T) {
	for _, tc := range []struct {
		p     Param
		value string
		want  string // "" = accepted
	}{
		{Param{Name: "host", Type: ParamString}, "-oProxyCommand=touch /tmp/x", "parameter host: starts with '-', which the program could read as an option (the declaration does not set allow_dash)"},
		{Param{Name: "arg", Type: ParamString}, "-S touch /tmp/x", "parameter arg: starts with '-'"},
		{Param{Name: "arg", Type: ParamString}, "--", "starts with '-'"},
		{Param{Name: "arg", Type: ParamString}, "-", "starts with '-'"},
		// A pattern that allows anything does not lift the rule.
		{Param{Name: "arg", Type: ParamString, Pattern: `.*`}, "-oX", "starts with '-'"},
		{Param{Name: "arg", Type: ParamString, Pattern: `[a-z0-9.-]+`}, "-oX", "starts with '-'"},
		{Param{Name: "arg", Type: ParamString}, "a-b", ""},
		{Param{Name: "arg", Type: ParamString}, "x -oX", ""},
		{Param{Name: "arg", Type: ParamString}, "+5", ""},
		{Param{Name: "arg", Type: ParamString, AllowDash: true}, "-v", ""},
		{Param{Name: "arg", Type: ParamString, AllowDash: true, Pattern: `-[a-z]`}, "-v", ""},
		{Param{Name: "arg", Type: ParamString, AllowDash: true, Pattern: `-[a-z]`}, "-vv", "does not match"},

		// Numbers: negative only when min is below zero.
		{Param{Name: "n", Type: ParamInt}, "-9", "parameter n: starts with '-', which the program could read as an option (negative values need a min below 0)"},
		{Param{Name: "n", Type: ParamInt}, "-0", "starts with '-'"},
		{Param{Name: "n", Type: ParamInt, Min: ptr(0)}, "-0", "starts with '-'"},
		{Param{Name: "n", Type: ParamInt, Min: ptr(1)}, "-5", "below the minimum 1"},
		{Param{Name: "n", Type: ParamInt, Min: ptr(-10)}, "-5", ""},
		{Param{Name: "n", Type: ParamInt, Min: ptr(-10)}, "-11", "below the minimum -10"},
		{Param{Name: "n", Type: ParamInt}, "+5", ""},
		{Param{Name: "n", Type: ParamInt}, "5", ""},
		{Param{Name: "x", Type: ParamNumber}, "-1e3", "starts with '-'"},
		{Param{Name: "x", Type: ParamNumber}, "-0x1p-2", "starts with '-'"},
		{Param{Name: "x", Type: ParamNumber, Max: ptr(10)}, "-0.5", "starts with '-'"},
		{Param{Name: "x", Type: ParamNumber, Min: ptr(-1)}, "-0.5", ""},

		// Enum values are the host owner's own words: trusted as declared.
		{Param{Name: "m", Type: ParamEnum, Values: []string{"-fast", "slow"}}, "-fast", ""},
		{Param{Name: "m", Type: ParamEnum, Values: []string{"-fast", "slow"}}, "-slow", "want one of"},
	} {
		err := tc.p.Check(tc.value)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %q refused: %v", tc.p, tc.value, err)
			}
			continue
		}
		var pe *ParamError
		if err == nil || !errors.As(err, &pe) || pe.Param != tc.p.Name || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %q → %v, want %q", tc.p, tc.value, err, tc.want)
		}
	}
}

// TestCheckRefusesControlCharacters: control characters other than tab
// need allow_control_chars; NUL is refused whatever the declaration.
func TestCheckRefusesControlCharacters(t *testing.T) {
	plain := Param{Name: "msg", Type: ParamString}
	allowed := Param{Name: "msg", Type: ParamString, AllowControlChars: true}
	for v, code := range map[string]string{
		"a\nb": "U+000A", "a\rb": "U+000D", "\x1b[31mred": "U+001B", "del\x7f": "U+007F", "\x01": "U+0001",
		"x\x1f": "U+001F", "ok\tthen\v": "U+000B",
	} {
		err := plain.Check(v)
		want := "parameter msg: contains the control character " + code + " (the declaration does not set allow_control_chars)"
		if err == nil || err.Error() != want {
			t.Errorf("%q → %v, want %q", v, err, want)
		}
		if err := allowed.Check(v); err != nil {
			t.Errorf("allow_control_chars: %q refused: %v", v, err)
		}
	}
	for _, v := range []string{"tab\there", "é\u0085\u2028ü", "plain"} {
		if err := plain.Check(v); err != nil {
			t.Errorf("%q refused: %v", v, err)
		}
	}
	for _, p := range []Param{plain, allowed} {
		if err := p.Check("a\x00b"); err == nil || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("NUL with %+v: %v", p, err)
		}
	}
	// A pattern cannot lift the rule either.
	p := Param{Name: "msg", Type: ParamString, Pattern: `(?s).*`}
	if err := p.Check("a\nb"); err == nil || !strings.Contains(err.Error(), "U+000A") {
		t.Errorf("pattern (?s).*: %v", err)
	}
}

// TestPatternMatchesWholeValue: a pattern always matches the whole value,
// whatever its alternation, flags or quoting.
func TestPatternMatchesWholeValue(t *testing.T) {
	for _, tc := range []struct {
		pattern, value string
		ok             bool
	}{
		{`[a-z]+`, "abc", true},
		{`[a-z]+`, "abc;rm", false},
		{`[a-z]+`, "x y", false},
		{`a|ab`, "ab", true},      // the leftmost-first match "a" is not the only one
		{`(?U)a+`, "aaa", true},   // ungreedy still matches whole values
		{`(?U)a+`, "aaab", false}, //
		{`(?m)^[a-z]+$`, "abc\ndef", false},
		{`\Qa.b`, "a.b", true},   // an unterminated \Q quotes to the end
		{`\Qa.b`, "a.bc", false}, //
		{`\Qa.b`, "axb", false},  //
		{`x|`, "", true},         //
		{`x|`, "xy", false},      //
		{`[a-z0-9][a-z0-9.-]*`, "data-a.example", true},
		{`[a-z0-9][a-z0-9.-]*`, "a b", false},
	} {
		p := Param{Name: "s", Type: ParamString, Pattern: tc.pattern, AllowControlChars: true}
		if err := p.Check(tc.value); (err == nil) != tc.ok {
			t.Errorf("pattern %q, value %q: %v, want ok=%v", tc.pattern, tc.value, err, tc.ok)
		}
	}
}

// TestValidateDashAndControlRules: the allowances are for strings, and a
// declared default obeys its declaration's rules.
func TestValidateDashAndControlRules(t *testing.T) {
	one := func(p Param) error {
		a := Action{Name: "a", Timeout: 1, Params: []Param{p}}
		return a.Validate()
	}
	for _, tc := range []struct {
		p    Param
		want string // "" = valid
	}{
		{Param{Name: "p", Type: ParamInt, AllowDash: true}, "allow_dash is for strings"},
		{Param{Name: "p", Type: ParamNumber, AllowDash: true}, "allow_dash is for strings"},
		{Param{Name: "p", Type: ParamEnum, Values: []string{"a"}, AllowDash: true}, "allow_dash is for strings"},
		{Param{Name: "p", Type: ParamBool, AllowControlChars: true}, "allow_control_chars is for strings"},
		{Param{Name: "p", Type: ParamString, Default: "-v"}, "default: parameter p: starts with '-'"},
		{Param{Name: "p", Type: ParamString, Default: "a\nb"}, "default: parameter p: contains the control character U+000A"},
		{Param{Name: "p", Type: ParamInt, Default: "-1"}, "default: parameter p: starts with '-'"},
		{Param{Name: "p", Type: ParamString, Default: "-v", AllowDash: true}, ""},
		{Param{Name: "p", Type: ParamString, Default: "a\nb", AllowControlChars: true}, ""},
		{Param{Name: "p", Type: ParamInt, Default: "-1", Min: ptr(-5)}, ""},
		{Param{Name: "p", Type: ParamEnum, Values: []string{"-a", "b"}, Default: "-a"}, ""},
	} {
		err := one(tc.p)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
}

// TestAllowancesAreDeclared: the allowances travel in the declaration an
// agent announces, and two declarations that differ only in them are not
// the same (the hub refuses to treat them as one action).
func TestAllowancesAreDeclared(t *testing.T) {
	base := Action{Name: "ssh", Timeout: 1, Params: []Param{{Name: "host", Type: ParamString}}}
	dash := Action{Name: "ssh", Timeout: 1, Params: []Param{{Name: "host", Type: ParamString, AllowDash: true}}}
	ctl := Action{Name: "ssh", Timeout: 1, Params: []Param{{Name: "host", Type: ParamString, AllowControlChars: true}}}
	if base.Equal(&dash) || dash.Equal(&base) || base.Equal(&ctl) || ctl.Equal(&dash) {
		t.Fatal("declarations differing in allow_dash or allow_control_chars are Equal")
	}
	if !dash.Equal(&dash) {
		t.Fatal("a declaration is not Equal to itself")
	}
	b, err := json.Marshal(Hello{Type: TypeHello, Agent: "c1", Actions: []Action{dash, ctl}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"allow_dash":true`) || !strings.Contains(string(b), `"allow_control_chars":true`) {
		t.Fatalf("hello %s lacks the allowances", b)
	}
	var h Hello
	if err := json.Unmarshal(b, &h); err != nil || !h.Actions[0].Equal(&dash) || !h.Actions[1].Equal(&ctl) {
		t.Fatalf("round trip: %+v, %v", h.Actions, err)
	}
	if _, err := h.Actions[0].CheckParams(map[string]string{"host": "-v"}); err != nil {
		t.Fatalf("allow_dash lost in transit: %v", err)
	}
	if _, err := base.CheckParams(map[string]string{"host": "-oProxyCommand=touch /tmp/x"}); err == nil {
		t.Fatal("CheckParams accepted an option as host")
	}
}
