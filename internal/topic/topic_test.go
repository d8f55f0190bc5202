package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	good := []string{"a", "demo", "expt42/video0", "a.b_c~d-e", strings.Repeat("x", 64), strings.Repeat("ab/", 84) + "abc"}
	for _, n := range good {
		if err := Valid(n); err != nil {
			t.Errorf("Valid(%q) = %v, want nil", n, err)
		}
	}
	bad := []string{"", "/a", "a/", "a//b", "a b", "a?b", "a%20", ".", "a/../b", "..", "ü", "a*", "*",
		strings.Repeat("x", 65), strings.Repeat("ab/", 85) + "abc"}
	for _, n := range bad {
		if err := Valid(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("Valid(%q) = %v, want ErrInvalid", n, err)
		}
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"demo", "demo", true},
		{"demo", "demo2", false},
		{"demo", "demo/x", false},
		{"expt42/*", "expt42/video", true},
		{"expt42/*", "expt42/a/b", true},
		{"expt42/*", "expt42", false},
		{"expt42/*", "expt420/x", false},
		{"expt42/*", "expt4/x", false},
		{"*", "anything/at/all", true},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestValidPattern(t *testing.T) {
	for _, p := range []string{"*", "a/*", "a/b/*", "a"} {
		if err := ValidPattern(p); err != nil {
			t.Errorf("ValidPattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "/*", "a/*/b", "a*", "*/a", "a/**"} {
		if err := ValidPattern(p); err == nil {
			t.Errorf("ValidPattern(%q) = nil, want error", p)
		}
	}
}

// FuzzValid checks that Valid never panics and that every accepted name is
// matched by itself and by its parent patterns.
func FuzzValid(f *testing.F) {
	for _, s := range []string{"demo", "a/b/c", "a//b", "../x", "expt42/*", "*", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Valid(s) != nil {
			return
		}
		if !Match(s, s) || !Match("*", s) {
			t.Fatalf("valid name %q not matched by itself or *", s)
		}
		if i := strings.LastIndexByte(s, '/'); i > 0 && !Match(s[:i]+"/*", s) {
			t.Fatalf("%q not matched by its parent pattern", s)
		}
		if IsPattern(s) {
			t.Fatalf("valid name %q is a pattern", s)
		}
	})
}
