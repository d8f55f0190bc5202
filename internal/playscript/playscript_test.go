package playscript

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// stepWant is a compact description of a parsed step.
type stepWant struct {
	line  int
	delay time.Duration
	wait  string // "source|count|timeout", "" for none
	enc   Encoding
	send  *string // nil: no message
}

func str(s string) *string { return &s }

func describe(st Step) stepWant {
	w := stepWant{line: st.Line, delay: st.Delay}
	if st.Wait != nil {
		w.wait = st.Wait.Source + "|" + strconv.Itoa(st.Wait.Count) + "|" + st.Wait.Timeout.String()
	}
	if st.Send != nil {
		w.enc = st.Send.Encoding
		w.send = str(string(st.Send.Data))
	}
	return w
}

func TestParseConstructs(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []stepWant
	}{
		{"empty", "", nil},
		{"comments and blank lines", "# a comment\n\n   \n\t\n#[1s] not a delay\n", nil},
		{"bare line", "hello world\n", []stepWant{{line: 1, send: str("hello world")}}},
		{"no final newline", "a\nb", []stepWant{{line: 1, send: str("a")}, {line: 2, send: str("b")}}},
		{"crlf", "a\r\n[1s] b\r\n\r\n", []stepWant{{line: 1, send: str("a")}, {line: 2, delay: time.Second, send: str("b")}}},
		{"leading and trailing space kept", "  indented  \n", []stepWant{{line: 1, send: str("  indented  ")}}},
		{"json", `{"set":"led","on":true}`, []stepWant{{line: 1, send: str(`{"set":"led","on":true}`)}}},
		{"delay alone", "[500ms]\n", []stepWant{{line: 1, delay: 500 * time.Millisecond}}},
		{"delay with trailing space", "[2m]  \n", []stepWant{{line: 1, delay: 2 * time.Minute}}},
		{"delay then text", "[1.5s] go\n", []stepWant{{line: 1, delay: 1500 * time.Millisecond, send: str("go")}}},
		{"delay without space", "[1s]go", []stepWant{{line: 1, delay: time.Second, send: str("go")}}},
		{"delay one space only removed", "[1s]   go", []stepWant{{line: 1, delay: time.Second, send: str("  go")}}},
		{"delay spaces inside", "[ 250ms ] x", []stepWant{{line: 1, delay: 250 * time.Millisecond, send: str("x")}}},
		{"zero delay", "[0s] x", []stepWant{{line: 1, send: str("x")}}},
		{"delay then literal bracket", "[1s] [x]", []stepWant{{line: 1, delay: time.Second, send: str("[x]")}}},
		{"wait alone", "<'^pong$',1,5s>", []stepWant{{line: 1, wait: "^pong$|1|5s"}}},
		{"wait then text", "<'ok',2,1m> next", []stepWant{{line: 1, wait: "ok|2|1m0s", send: str("next")}}},
		{"wait with spaces", "< 'a b' , 3 , 250ms >  x", []stepWant{{line: 1, wait: "a b|3|250ms", send: str(" x")}}},
		{"wait quote in regex", `<'it\'s',1,1s>`, []stepWant{{line: 1, wait: `it\'s|1|1s`}}},
		{"wait backslash before quote", `<'a\\',1,1s>`, []stepWant{{line: 1, wait: `a\\|1|1s`}}},
		{"wait regex with > and ,", "<'a>b,c',1,1s> t", []stepWant{{line: 1, wait: "a>b,c|1|1s", send: str("t")}}},
		{"escape bracket", `\[not a delay]`, []stepWant{{line: 1, send: str("[not a delay]")}}},
		{"escape angle", `\<b>bold</b>`, []stepWant{{line: 1, send: str("<b>bold</b>")}}},
		{"escape hash", `\# not a comment`, []stepWant{{line: 1, send: str("# not a comment")}}},
		{"escape backslash", `\\n`, []stepWant{{line: 1, send: str(`\n`)}}},
		{"escape percent", `\%hex 00`, []stepWant{{line: 1, send: str("%hex 00")}}},
		{"backslash later is literal", `a\b`, []stepWant{{line: 1, send: str(`a\b`)}}},
		{"empty message", `\`, []stepWant{{line: 1, send: str("")}}},
		{"blank message", `\   `, []stepWant{{line: 1, send: str("   ")}}},
		{"escape after delay", `[1s] \# x`, []stepWant{{line: 1, delay: time.Second, send: str("# x")}}},
		{"empty after delay", `[1s] \`, []stepWant{{line: 1, delay: time.Second, send: str("")}}},
		{"hex", "%hex 02 10 FF", []stepWant{{line: 1, enc: Hex, send: str("\x02\x10\xff")}}},
		{"hex compact", "%hex 0210ff", []stepWant{{line: 1, enc: Hex, send: str("\x02\x10\xff")}}},
		{"hex tab", "%hex\t00", []stepWant{{line: 1, enc: Hex, send: str("\x00")}}},
		{"hex empty", "%hex", []stepWant{{line: 1, enc: Hex, send: str("")}}},
		{"base64", "%base64 AAEC", []stepWant{{line: 1, enc: Base64, send: str("\x00\x01\x02")}}},
		{"base64 spaced", "%base64 AA EC", []stepWant{{line: 1, enc: Base64, send: str("\x00\x01\x02")}}},
		{"binary after wait", "<'x',1,1s> %hex 00", []stepWant{{line: 1, wait: "x|1|1s", enc: Hex, send: str("\x00")}}},
		{"line numbers skip comments", "# c\n\na\n# c\n[1s]\nb\n", []stepWant{
			{line: 3, send: str("a")}, {line: 5, delay: time.Second}, {line: 6, send: str("b")}}},
		{"unicode text", "héllo ✓", []stepWant{{line: 1, send: str("héllo ✓")}}},
		{"byte order mark", "\ufeff# comment\nx\n", []stepWant{{line: 2, send: str("x")}}},
		{"byte order mark only at the start", "x\n\ufeffy", []stepWant{{line: 1, send: str("x")}, {line: 2, send: str("\ufeffy")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tc.in), "s.txt")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(s.Steps) != len(tc.want) {
				t.Fatalf("%d steps, want %d: %+v", len(s.Steps), len(tc.want), s.Steps)
			}
			for i, st := range s.Steps {
				got := describe(st)
				w := tc.want[i]
				if got.line != w.line || got.delay != w.delay || got.wait != w.wait || got.enc != w.enc ||
					(got.send == nil) != (w.send == nil) || (got.send != nil && *got.send != *w.send) {
					t.Errorf("step %d: got %s, want %s", i, fmtWant(got), fmtWant(w))
				}
			}
			// Rendering and parsing again gives the same steps.
			again, err := Parse(strings.NewReader(s.String()), "again")
			if err != nil {
				t.Fatalf("re-parse of %q: %v", s.String(), err)
			}
			if again.String() != s.String() || len(again.Steps) != len(s.Steps) {
				t.Fatalf("re-render %q != %q", again.String(), s.String())
			}
		})
	}
}

func fmtWant(w stepWant) string {
	send := "<none>"
	if w.send != nil {
		send = strings.ReplaceAll(*w.send, "\x00", `\0`)
		send = "\"" + send + "\""
	}
	return "{line " + strconv.Itoa(w.line) + " delay " + w.delay.String() + " wait " + w.wait + " enc " + strconv.Itoa(int(w.enc)) + " send " + send + "}"
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // each error, in order
	}{
		{"bad duration", "a\n\n# c\n\n\n\n[5 parsecs] x\n", []string{`s.txt:7: bad duration "5 parsecs" in [5 parsecs]`}},
		{"negative duration", "[-1s]", []string{`s.txt:1: negative duration "-1s" in [-1s]`}},
		{"empty duration", "[]", []string{`s.txt:1: bad duration "" in []`}},
		{"unterminated delay", "ok\n[1s x", []string{`s.txt:2:1: unterminated "[": no closing "]" (write \[ to send a line that starts with [)`}},
		{"no regex", "<b>bold</b>", []string{`s.txt:1:2: no regex: want <'regex',count,timeout> (write \< to send a line that starts with <)`}},
		{"lone angle", "<", []string{`s.txt:1:2: no regex: want <'regex',count,timeout> (write \< to send a line that starts with <)`}},
		{"unterminated regex", `<'abc\',1,1s>`, []string{`s.txt:1:2: unterminated regex: no closing "'" (write a quote inside the regex as \')`}},
		{"bad regex", "<'a(b',1,1s>", []string{"s.txt:1:3: bad regex 'a(b': error parsing regexp: missing closing ): `a(b`"}},
		{"missing args", "<'a'>", []string{`s.txt:1:5: want ,count,timeout after the regex in <'a'>`}},
		{"missing timeout", "<'a',1>", []string{`s.txt:1:5: want ,count,timeout after the regex in <'a',1>`}},
		{"too many args", "<'a',1,1s,2>", []string{`s.txt:1:5: want ,count,timeout after the regex in <'a',1,1s,2>`}},
		{"junk before comma", "<'a' x,1,1s>", []string{`s.txt:1:5: want ,count,timeout after the regex in <'a' x,1,1s>`}},
		{"no closing angle", "<'a',1,1s", []string{`s.txt:1:1: unterminated "<": no closing ">" after the regex; want <'regex',count,timeout> (write \< to send a line that starts with <)`}},
		{"bad count", "<'a',x,1s>", []string{`s.txt:1: bad count "x" in <'a',x,1s>: want a whole number, at least 1`}},
		{"zero count", "<'a',0,1s>", []string{`s.txt:1: bad count "0" in <'a',0,1s>: want a whole number, at least 1`}},
		{"negative count", "<'a',-2,1s>", []string{`s.txt:1: bad count "-2" in <'a',-2,1s>: want a whole number, at least 1`}},
		{"bad timeout", "<'a',1,soon>", []string{`s.txt:1: bad timeout "soon" in <'a',1,soon>`}},
		{"timeout without unit", "<'a',1,5>", []string{`s.txt:1: bad timeout "5" in <'a',1,5>`}},
		{"zero timeout", "<'a',1,0s>", []string{`s.txt:1: zero timeout in <'a',1,0s>: want a positive duration such as 5s`}},
		{"negative timeout", "<'a',1,-1s>", []string{`s.txt:1: negative timeout "-1s" in <'a',1,-1s>`}},
		{"unknown encoding", "%d items", []string{`s.txt:1:1: unknown encoding "%d": want %hex or %base64 (write \% to send text that starts with %)`}},
		{"unknown encoding after delay", "[1s] %b64 AAEC", []string{`s.txt:1:6: unknown encoding "%b64": want %hex or %base64 (write \% to send text that starts with %)`}},
		{"bad hex digit", "%hex 00 0g", []string{`s.txt:1:10: bad %hex data: 'g' is not a hex digit`}},
		{"odd hex", "%hex 001", []string{`s.txt:1:1: bad %hex data: odd number of hex digits`}},
		{"bad base64", "%base64 AA*C", []string{`s.txt:1:1: bad %base64 data: illegal base64 data at input byte 2 (want standard base64, with padding)`}},
		{"unpadded base64", "%base64 AAE", []string{`s.txt:1:1: bad %base64 data: illegal base64 data at input byte 0 (want standard base64, with padding)`}},
		{"invalid utf-8", "ab\xffc", []string{`s.txt:1:3: text is not valid UTF-8 (send binary data with %hex or %base64)`}},
		{"invalid utf-8 after delay", "[1s] é\xff", []string{`s.txt:1:7: text is not valid UTF-8 (send binary data with %hex or %base64)`}},
		{"every error reported", "[x]\nok\n<'(',1,1s>\n%zz\n", []string{
			`s.txt:1: bad duration "x" in [x]`,
			"s.txt:3:3: bad regex '(': error parsing regexp: missing closing ): `(`",
			`s.txt:4:1: unknown encoding "%zz": want %hex or %base64 (write \% to send text that starts with %)`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tc.in), "s.txt")
			if err == nil {
				t.Fatalf("accepted: %s", s)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %T %v is not an ErrorList", err, err)
			}
			if err.Error() != strings.Join(tc.want, "\n") {
				t.Fatalf("error:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestParseManyErrorsCapped(t *testing.T) {
	_, err := Parse(strings.NewReader(strings.Repeat("[x]\n", 25)), "s")
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 25 {
		t.Fatalf("%d errors: %v", len(list), err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 11 || lines[10] != "(and 15 more errors)" || lines[9] != `s:10: bad duration "x" in [x]` {
		t.Fatalf("error text:\n%s", err)
	}
}

func TestParseLongLine(t *testing.T) {
	in := "ok\n" + strings.Repeat("a", MaxLineLength) + "\n" + strings.Repeat("b", MaxLineLength+1) + "\nlater\n"
	_, err := Parse(strings.NewReader(in), "s")
	if err == nil || !strings.Contains(err.Error(), "s:3: line too long") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "s:2:") {
		t.Fatalf("a line of exactly MaxLineLength refused: %v", err)
	}
}

func TestParseReadError(t *testing.T) {
	_, err := Parse(iotest.ErrReader(errors.New("disk on fire")), "s")
	var list ErrorList
	if err == nil || errors.As(err, &list) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
}

func TestRender(t *testing.T) {
	in := "# header\nhello\n[1s]\n[2s] \\[x]\n<'it\\'s',2,5s>\n<'a',1,1m30s> %hex 00 ff\n%base64 AAEC\n\\\n\\  \n[0s]\n"
	s, err := Parse(strings.NewReader(in), "s")
	if err != nil {
		t.Fatal(err)
	}
	want := "hello\n[1s]\n[2s] \\[x]\n<'it\\'s',2,5s>\n<'a',1,1m30s> %hex 00 ff\n%base64 AAEC\n\\\n\\  \n[0s]\n"
	if s.String() != want {
		t.Fatalf("String() =\n%q\nwant\n%q", s.String(), want)
	}
}
