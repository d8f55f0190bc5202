package jobproto

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func ptr(f float64) *float64 { return &f }

func TestCheckParams(t *testing.T) {
	a := Action{Name: "download", Timeout: Duration(time.Minute), Params: []Param{
		{Name: "server", Type: ParamString, Required: true, Pattern: "[a-z0-9.-]+", MaxLength: 20},
		{Name: "count", Type: ParamInt, Min: ptr(1), Max: ptr(100), Default: "1"},
		{Name: "ratio", Type: ParamNumber, Min: ptr(0), Max: ptr(1)},
		{Name: "verbose", Type: ParamBool},
		{Name: "mode", Type: ParamEnum, Values: []string{"fast", "slow"}},
	}}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := a.CheckParams(map[string]string{"SERVER": "a.example", "ratio": "0.5", "Verbose": "true"})
	if err != nil || got["server"] != "a.example" || got["count"] != "1" || got["ratio"] != "0.5" || got["verbose"] != "true" || len(got) != 4 {
		t.Fatalf("CheckParams = %v, %v", got, err)
	}
	for _, tc := range []struct {
		given map[string]string
		want  string
	}{
		{map[string]string{}, "parameter server: is required"},
		{map[string]string{"server": "A B"}, "parameter server: does not match [a-z0-9.-]+"},
		{map[string]string{"server": "a", "x": "1"}, "parameter x: is not a parameter of action download"},
		{map[string]string{"server": "a", "count": "101"}, "parameter count: above the maximum 100"},
		{map[string]string{"server": "a", "count": "0"}, "parameter count: below the minimum 1"},
		{map[string]string{"server": "a", "count": "1.5"}, `parameter count: "1.5" is not an integer`},
		{map[string]string{"server": "a", "ratio": "NaN"}, `parameter ratio: "NaN" is not a number`},
		{map[string]string{"server": "a", "verbose": "yes"}, "parameter verbose: want true or false"},
		{map[string]string{"server": "a", "mode": "medium"}, "parameter mode: want one of fast, slow"},
		{map[string]string{"server": strings.Repeat("a", 21)}, "parameter server: longer than 20 bytes"},
		{map[string]string{"server": "a", "SERVER": "b"}, "given more than once"},
	} {
		_, err := a.CheckParams(tc.given)
		var pe *ParamError
		if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckParams(%v) = %v, want %q", tc.given, err, tc.want)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    Action
	}{
		{"bad name", Action{Name: "1x", Timeout: 1}},
		{"no timeout", Action{Name: "x"}},
		{"reserved param", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "runid", Type: ParamString}}}},
		{"unknown type", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: "file"}}}},
		{"bad pattern", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: ParamString, Pattern: "("}}}},
		{"min above max", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: ParamInt, Min: ptr(2), Max: ptr(1)}}}},
		{"enum without values", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: ParamEnum}}}},
		{"bad default", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: ParamInt, Default: "x"}}}},
		{"required with default", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: ParamInt, Required: true, Default: "1"}}}},
		{"twice", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: ParamBool}, {Name: "P", Type: ParamBool}}}},
		{"pattern on int", Action{Name: "x", Timeout: 1, Params: []Param{{Name: "p", Type: ParamInt, Pattern: "1"}}}},
	} {
		if err := tc.a.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", tc.name, tc.a)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	for in, want := range map[string]time.Duration{`"90s"`: 90 * time.Second, `30`: 30 * time.Second, `0.5`: 500 * time.Millisecond} {
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("%s → %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{`"-1s"`, `-3`, `"soon"`, `true`, `1e300`} {
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
	if b, _ := json.Marshal(Duration(90 * time.Second)); string(b) != `"1m30s"` {
		t.Errorf("marshal: %s", b)
	}
}

// FuzzHello: whatever an agent sends as its hello, decoding and checking
// its declarations and any parameters against them never panics, and
// values CheckParams accepts are accepted again.
func FuzzHello(f *testing.F) {
	f.Add([]byte(`{"type":"hello","agent":"c1","labels":["role=client"],"actions":[{"name":"download","timeout":"1m","params":[{"name":"server","type":"string","required":true,"pattern":"[a-z]+"},{"name":"n","type":"int","min":1,"max":9,"default":"1"}]}]}`), "server", "abc")
	f.Add([]byte(`{"type":"hello","agent":"c1","actions":[{"name":"e","timeout":5,"params":[{"name":"m","type":"enum","values":["a","b"]}]}]}`), "m", "b")
	f.Add([]byte(`{"actions":[{"name":"x","timeout":"1s","params":[{"name":"f","type":"number","min":-1e308,"max":1e308}]}]}`), "f", "1e309")
	f.Add([]byte(`{"actions":[{"name":"ssh","timeout":"1s","params":[{"name":"host","type":"string"}]}]}`), "host", "-oProxyCommand=touch /tmp/x")
	f.Add([]byte(`{"actions":[{"name":"env","timeout":"1s","params":[{"name":"arg","type":"string","pattern":".*","allow_dash":true}]}]}`), "arg", "-S touch /tmp/x")
	f.Add([]byte(`{"actions":[{"name":"say","timeout":"1s","params":[{"name":"msg","type":"string","pattern":"(?m)^[a-z]+$"}]}]}`), "msg", "abc\ndef")
	f.Add([]byte(`{"actions":[{"name":"n","timeout":"1s","params":[{"name":"n","type":"int"}]}]}`), "n", "-1")
	f.Fuzz(func(t *testing.T, hello []byte, name, value string) {
		var h Hello
		if json.Unmarshal(hello, &h) != nil {
			return
		}
		for _, l := range h.Labels {
			ValidLabel(l)
		}
		for i := range h.Actions {
			a := &h.Actions[i]
			if a.Validate() != nil {
				continue
			}
			got, err := a.CheckParams(map[string]string{name: value})
			if err != nil {
				continue
			}
			if _, err := a.CheckParams(got); err != nil {
				t.Fatalf("accepted values %v refused on a second check: %v", got, err)
			}
			for _, p := range a.Params {
				v, ok := got[p.Name]
				if !ok {
					continue
				}
				checkAccepted(t, &p, v)
			}
		}
	})
}

// checkAccepted fails t unless v, accepted for p, keeps p's rules: no
// leading '-' and no control character unless allowed, a whole match of
// the pattern.
func checkAccepted(t *testing.T, p *Param, v string) {
	t.Helper()
	switch p.Type {
	case ParamString:
		if strings.HasPrefix(v, "-") && !p.AllowDash {
			t.Fatalf("%s accepted %q, which starts with '-', without allow_dash", p.Name, v)
		}
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) && !p.AllowControlChars {
			t.Fatalf("%s accepted %q, which holds a control character, without allow_control_chars", p.Name, v)
		}
		if strings.ContainsRune(v, 0) {
			t.Fatalf("%s accepted %q, which holds NUL", p.Name, v)
		}
		if p.Pattern != "" {
			// An independent oracle: the pattern anchored by text. It may fail
			// to compile (an unterminated \Q quotes the anchors); then skip.
			if re, err := regexp.Compile(`^(?:` + p.Pattern + `)$`); err == nil && !re.MatchString(v) {
				t.Fatalf("%s accepted %q, which does not wholly match %s", p.Name, v, p.Pattern)
			}
		}
	case ParamInt, ParamNumber:
		if strings.HasPrefix(v, "-") && (p.Min == nil || *p.Min >= 0) {
			t.Fatalf("%s accepted %q, negative, without a min below 0", p.Name, v)
		}
	}
}
