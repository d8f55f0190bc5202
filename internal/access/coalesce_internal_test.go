package access

import "testing"

// TestCoalescePatterns: --coalesce takes topic patterns with their usual
// meaning and segment globs such as the 'expt*/control', which
// practable labs use for their experiments' command topics.
func TestCoalescePatterns(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"expt*/control", "expt01/control", true},
		{"expt*/control", "expt/control", true},
		{"expt*/control", "expt01/data", false},
		{"expt*/control", "expt01/sub/control", false}, // "*" stays within its segment
		{"expt*/control", "lab/expt01/control", false},
		{"*/control", "pend00/control", true},
		{"expt*/*", "expt01/video", true},
		{"expt42/*", "expt42/a/b", true}, // a topic pattern: any depth
		{"expt42/control", "expt42/control", true},
		{"expt42/control", "expt42/controls", false},
		{"*", "anything/at/all", true},
	} {
		if err := validCoalesce([]string{c.pattern}); err != nil {
			t.Fatalf("%q refused: %v", c.pattern, err)
		}
		if got := coalesceMatch(c.pattern, c.name); got != c.want {
			t.Errorf("coalesceMatch(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
	for _, bad := range []string{"", "expt[/control", "expt*//control", "expt*/con trol", "/expt*", "expt*/..", "expt?/control"} {
		if err := validCoalesce([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
