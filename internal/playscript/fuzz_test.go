package playscript

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; every error names a line of the input;
// an accepted script renders to a script that parses to the same steps and
// renders the same again.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"# comment\n\nhello\n",
		"[500ms]\n[1s] text\nbare\n",
		"<'^pong$',2,5s> next\n<'x',1,1m>\n",
		`<'it\'s',1,1s> \[literal`,
		"\\#\n\\\n\\  \n%hex 00 ff\n%base64 AAEC\n",
		"[5 parsecs] x\n<'(',1,1s>\n%zz\n[1s\n<'a',0,1s>\n",
		"a\r\nb\r\r\n",
		"ab\xffc\n",
		"\ufeffx\n\ufeffy\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		lines := strings.Count(in, "\n") + 1
		s, err := Parse(strings.NewReader(in), "f")
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %q is not a non-empty ErrorList", err, err)
			}
			for _, e := range list {
				if e.Line < 1 || e.Line > lines || e.Col < 0 || e.Name != "f" {
					t.Fatalf("error %+v names no line of the %d-line input", e, lines)
				}
				if !strings.HasPrefix(e.Error(), fmt.Sprintf("f:%d:", e.Line)) {
					t.Fatalf("error %q does not start with its line", e)
				}
			}
			return
		}
		for _, st := range s.Steps {
			if st.Line < 1 || st.Line > lines {
				t.Fatalf("step on line %d of a %d-line input", st.Line, lines)
			}
		}
		out := s.String()
		again, err := Parse(strings.NewReader(out), "again")
		if err != nil {
			t.Fatalf("rendered script %q does not parse: %v", out, err)
		}
		if again.String() != out {
			t.Fatalf("render of render %q != %q", again.String(), out)
		}
		if len(again.Steps) != len(s.Steps) {
			t.Fatalf("%d steps after rendering, %d before", len(again.Steps), len(s.Steps))
		}
		for i := range s.Steps {
			a, b := &s.Steps[i], &again.Steps[i]
			if b.Line != i+1 {
				t.Fatalf("rendered step %d on line %d", i, b.Line)
			}
			if a.Delay != b.Delay || (a.Wait == nil) != (b.Wait == nil) || (a.Send == nil) != (b.Send == nil) {
				t.Fatalf("step %d: %+v became %+v", i, a, b)
			}
			if a.Wait != nil && (a.Wait.Source != b.Wait.Source || a.Wait.Count != b.Wait.Count || a.Wait.Timeout != b.Wait.Timeout) {
				t.Fatalf("step %d: wait %+v became %+v", i, a.Wait, b.Wait)
			}
			if a.Send != nil && (a.Send.Encoding != b.Send.Encoding || !bytes.Equal(a.Send.Data, b.Send.Data)) {
				t.Fatalf("step %d: message %q became %q", i, a.Send, b.Send)
			}
		}
	})
}
