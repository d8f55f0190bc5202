// Package playscript parses and runs the message scripts of
// `switchboard client --play`: messages to send, delays, and waits for
// received messages that match a regular expression. The format is
// documented in docs/playback.md.
//
// Parse reads a whole script and reports every malformed line before
// anything can be sent. A Runner plays a parsed script through a Sender,
// counting the messages it is handed with Received; it never polls: waits
// block on a timer and on the arrival of matching messages.
package playscript

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxLineLength is the longest script line Parse accepts, in bytes.
const MaxLineLength = 16 << 20

// maxReported bounds the errors an ErrorList prints.
const maxReported = 10

// Encoding says how a message was written in the script, and so whether it
// is sent as a text or a binary message.
type Encoding int

const (
	Text   Encoding = iota // a text message, written as is
	Hex                    // a binary message written "%hex 02 10 ff"
	Base64                 // a binary message written "%base64 AhD/"
)

// Message is one message a script sends.
type Message struct {
	Encoding Encoding
	Data     []byte // the text (UTF-8) or the binary payload
}

// Binary reports whether m is sent as a binary message.
func (m *Message) Binary() bool { return m.Encoding != Text }

// Wait is a `<'regex',count,timeout>` directive: wait until Count received
// messages matched Pattern, or until Timeout passed.
type Wait struct {
	Source  string         // the regular expression as written between the quotes
	Pattern *regexp.Regexp // Source compiled (RE2 syntax, unanchored)
	Count   int            // at least 1
	Timeout time.Duration  // positive
}

// Step is one line of a script that does something: a delay or a wait,
// then optionally a message.
type Step struct {
	Line  int           // line number in the script, from 1
	Delay time.Duration // `[delay]`: wait this long first (zero when Wait is set)
	Wait  *Wait         // `<'regex',count,timeout>`: wait for messages first
	Send  *Message      // the message to send; nil for a line that only waits
}

// Script is a parsed script.
type Script struct {
	Name  string // the name errors are reported with, e.g. the file name
	Steps []Step
}

// Error is a malformed script line.
type Error struct {
	Name string // script name
	Line int    // line number, from 1
	Col  int    // column in characters, from 1; 0 when the whole line is meant
	Msg  string
}

func (e *Error) Error() string {
	if e.Col > 0 {
		return fmt.Sprintf("%s:%d:%d: %s", e.Name, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.Name, e.Line, e.Msg)
}

// ErrorList is every malformed line of a script, in line order. Parse
// returns one (as its error) when any line is malformed.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i == maxReported {
			fmt.Fprintf(&b, "\n(and %d more errors)", len(l)-maxReported)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Parse reads a whole script from r. name is used in error messages (the
// file name, typically). When lines are malformed the error is an ErrorList
// naming every one of them; an error reading r is returned as is.
func Parse(r io.Reader, name string) (*Script, error) {
	s := &Script{Name: name}
	var errs ErrorList
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4<<10), MaxLineLength+2) // room for "\r\n"
	sc.Split(splitLines)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff") // a byte order mark some editors write
		}
		if len(line) > MaxLineLength {
			errs = append(errs, &Error{Name: name, Line: n, Msg: fmt.Sprintf("line too long (more than %d bytes)", MaxLineLength)})
			continue
		}
		st, err := parseLine(line)
		if err != nil {
			err.Name, err.Line = name, n
			errs = append(errs, err)
			continue
		}
		if st != nil {
			st.Line = n
			s.Steps = append(s.Steps, *st)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			errs = append(errs, &Error{Name: name, Line: n + 1, Msg: fmt.Sprintf("line too long (more than %d bytes)", MaxLineLength)})
			return nil, errs
		}
		return nil, fmt.Errorf("%s: read: %w", name, err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// splitLines is bufio.ScanLines without its removal of one "\r": Parse
// removes every trailing "\r" itself.
func splitLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// parseLine parses one line (without its line ending). It returns nil, nil
// for blank and comment lines. Errors carry a column but no name or line.
func parseLine(line string) (*Step, *Error) {
	if strings.TrimSpace(line) == "" {
		return nil, nil
	}
	switch line[0] {
	case '#':
		return nil, nil
	case '[':
		return parseDelay(line)
	case '<':
		return parseWait(line)
	}
	m, err := parseBody(line, 0)
	if err != nil {
		return nil, err
	}
	return &Step{Send: m}, nil
}

func parseDelay(line string) (*Step, *Error) {
	end := strings.IndexByte(line, ']')
	if end < 0 {
		return nil, &Error{Col: 1, Msg: `unterminated "[": no closing "]" (write \[ to send a line that starts with [)`}
	}
	d, err := parseDuration(line[1:end])
	if err != "" {
		return nil, &Error{Msg: fmt.Sprintf("%s duration %q in %s", err, strings.TrimSpace(line[1:end]), line[:end+1])}
	}
	m, e := parseRest(line, end+1)
	if e != nil {
		return nil, e
	}
	return &Step{Delay: d, Send: m}, nil
}

// parseDuration parses a non-negative Go duration; it returns what is wrong
// with s ("bad" or "negative") or "".
func parseDuration(s string) (time.Duration, string) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	switch {
	case err != nil:
		return 0, "bad"
	case d < 0:
		return 0, "negative"
	}
	return d, ""
}

func parseWait(line string) (*Step, *Error) {
	const want = `want <'regex',count,timeout> (write \< to send a line that starts with <)`
	i := 1
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	if i == len(line) || line[i] != '\'' {
		return nil, &Error{Col: col(line, i), Msg: "no regex: " + want}
	}
	open := i
	i++
	for ; i < len(line) && line[i] != '\''; i++ {
		if line[i] == '\\' {
			i++ // an escaped character, maybe a quote
		}
	}
	if i >= len(line) {
		return nil, &Error{Col: col(line, open), Msg: `unterminated regex: no closing "'" (write a quote inside the regex as \')`}
	}
	src := line[open+1 : i]
	re, err := regexp.Compile(src)
	if err != nil {
		return nil, &Error{Col: col(line, open+1), Msg: fmt.Sprintf("bad regex '%s': %v", src, err)}
	}
	i++ // the closing quote
	end := strings.IndexByte(line[i:], '>')
	if end < 0 {
		return nil, &Error{Col: 1, Msg: `unterminated "<": no closing ">" after the regex; ` + want}
	}
	end += i
	directive := line[:end+1]
	args := strings.Split(line[i:end], ",")
	if len(args) != 3 || strings.TrimSpace(args[0]) != "" {
		return nil, &Error{Col: col(line, i), Msg: fmt.Sprintf("want ,count,timeout after the regex in %s", directive)}
	}
	w := &Wait{Source: src, Pattern: re}
	cs := strings.TrimSpace(args[1])
	if w.Count, err = strconv.Atoi(cs); err != nil || w.Count < 1 {
		return nil, &Error{Msg: fmt.Sprintf("bad count %q in %s: want a whole number, at least 1", cs, directive)}
	}
	ts := strings.TrimSpace(args[2])
	d, bad := parseDuration(ts)
	switch {
	case bad != "":
		return nil, &Error{Msg: fmt.Sprintf("%s timeout %q in %s", bad, ts, directive)}
	case d == 0:
		return nil, &Error{Msg: fmt.Sprintf("zero timeout in %s: want a positive duration such as 5s", directive)}
	}
	w.Timeout = d
	m, e := parseRest(line, end+1)
	if e != nil {
		return nil, e
	}
	return &Step{Wait: w, Send: m}, nil
}

// parseRest parses what follows a directive that ends at line[:at]: nothing
// (only white space), or one optional space or tab and a message.
func parseRest(line string, at int) (*Message, *Error) {
	rest := line[at:]
	if strings.TrimSpace(rest) == "" {
		return nil, nil
	}
	if rest[0] == ' ' || rest[0] == '\t' {
		at++
	}
	return parseBody(line, at)
}

// parseBody parses the message that starts at line[at:].
func parseBody(line string, at int) (*Message, *Error) {
	body := line[at:]
	switch {
	case strings.HasPrefix(body, `\`):
		at++
		body = body[1:]
	case strings.HasPrefix(body, "%"):
		return parseBinary(line, at)
	}
	if !utf8.ValidString(body) {
		bad := at
		for bad < len(line) {
			r, size := utf8.DecodeRuneInString(line[bad:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			bad += size
		}
		return nil, &Error{Col: col(line, bad), Msg: "text is not valid UTF-8 (send binary data with %hex or %base64)"}
	}
	return &Message{Encoding: Text, Data: []byte(body)}, nil
}

func parseBinary(line string, at int) (*Message, *Error) {
	body := line[at:]
	word, data, dataAt := body, "", len(line)
	if i := strings.IndexAny(body, " \t"); i >= 0 {
		word, data, dataAt = body[:i], body[i+1:], at+i+1
	}
	compact := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, data)
	switch word {
	case "%hex":
		b, err := hex.DecodeString(compact)
		if err != nil {
			var ie hex.InvalidByteError
			if errors.As(err, &ie) {
				// Find the offending byte in the original line for its column.
				i := dataAt + strings.IndexByte(line[dataAt:], byte(ie))
				r, _ := utf8.DecodeRuneInString(line[i:])
				return nil, &Error{Col: col(line, i), Msg: fmt.Sprintf("bad %%hex data: %q is not a hex digit", r)}
			}
			return nil, &Error{Col: col(line, at), Msg: "bad %hex data: odd number of hex digits"}
		}
		return &Message{Encoding: Hex, Data: nonNil(b)}, nil
	case "%base64":
		b, err := base64.StdEncoding.Strict().DecodeString(compact)
		if err != nil {
			return nil, &Error{Col: col(line, at), Msg: fmt.Sprintf("bad %%base64 data: %v (want standard base64, with padding)", err)}
		}
		return &Message{Encoding: Base64, Data: nonNil(b)}, nil
	}
	return nil, &Error{Col: col(line, at), Msg: fmt.Sprintf(`unknown encoding %q: want %%hex or %%base64 (write \%% to send text that starts with %%)`, word)}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// col is the column (in characters, from 1) of the byte line[i].
func col(line string, i int) int {
	if i > len(line) {
		i = len(line)
	}
	return utf8.RuneCountInString(line[:i]) + 1
}

// String renders the script in the script format, one line per step,
// without comments or blank lines. Parsing the result gives the same steps
// (with other line numbers).
func (s *Script) String() string {
	var b strings.Builder
	for i := range s.Steps {
		b.WriteString(s.Steps[i].String())
		b.WriteByte('\n')
	}
	return b.String()
}

// String renders the step as one script line.
func (st *Step) String() string {
	var b strings.Builder
	switch {
	case st.Wait != nil:
		fmt.Fprintf(&b, "<'%s',%d,%s>", st.Wait.Source, st.Wait.Count, st.Wait.Timeout)
	case st.Delay > 0 || st.Send == nil:
		fmt.Fprintf(&b, "[%s]", st.Delay)
	}
	if st.Send != nil {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(st.Send.String())
	}
	return b.String()
}

// String renders the message as it is written in a script: text escaped
// with a backslash when it would otherwise be read as something else, or
// binary data as %hex or %base64.
func (m *Message) String() string {
	switch m.Encoding {
	case Hex:
		if len(m.Data) == 0 {
			return "%hex"
		}
		var b strings.Builder
		b.WriteString("%hex")
		for _, c := range m.Data {
			fmt.Fprintf(&b, " %02x", c)
		}
		return b.String()
	case Base64:
		if len(m.Data) == 0 {
			return "%base64"
		}
		return "%base64 " + base64.StdEncoding.EncodeToString(m.Data)
	}
	t := string(m.Data)
	if t == "" || strings.TrimSpace(t) == "" || strings.ContainsRune(`\%#[<`, rune(t[0])) || strings.HasPrefix(t, "\ufeff") {
		return `\` + t
	}
	return t
}
