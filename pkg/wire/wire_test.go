package wire

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseCode: ParseCode never panics, accepts every code NewCode makes,
// and accepts only codes of the documented form.
func FuzzParseCode(f *testing.F) {
	f.Add(NewCode("n1"))
	f.Add("AAAAAAAAAAAAAAAAAAAAAA.")
	f.Add(".n1")
	f.Add("AAAAAAAAAAAAAAAAAAAAAA.N1")
	f.Fuzz(func(t *testing.T, code string) {
		node, ok := ParseCode(code)
		if !ok {
			return
		}
		random, rest, _ := strings.Cut(code, ".")
		if rest != node || len(random) != 22 || !ValidNodeID(node) {
			t.Fatalf("accepted malformed code %q", code)
		}
	})
}

func TestNewCodeForm(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		c := NewCode("node-7")
		if node, ok := ParseCode(c); !ok || node != "node-7" {
			t.Fatalf("ParseCode(%q) = %q %v", c, node, ok)
		}
		if seen[c] {
			t.Fatalf("duplicate code")
		}
		seen[c] = true
	}
}

func TestValidNodeID(t *testing.T) {
	for id, want := range map[string]bool{
		"n1": true, "node-7": true, strings.Repeat("a", MaxNodeIDLen): true,
		"": false, "N1": false, "n.1": false, "n_1": false, strings.Repeat("a", MaxNodeIDLen+1): false,
	} {
		if got := ValidNodeID(id); got != want {
			t.Errorf("ValidNodeID(%q) = %v, want %v", id, got, want)
		}
	}
}

// docTable returns the rows of the first Markdown table after the heading
// line in docs/protocol.md, as trimmed cells with backticks and ** removed.
func docTable(t *testing.T, heading string) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/protocol.md has no heading %q", heading)
	}
	var rows [][]string
	inTable := false
	for line := range strings.Lines(after) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i, c := range cells {
			cells[i] = strings.TrimSpace(strings.NewReplacer("`", "", "**", "").Replace(c))
		}
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		rows = append(rows, cells)
	}
	if len(rows) < 2 {
		t.Fatalf("docs/protocol.md %q: no table", heading)
	}
	return rows[1:] // without the header
}

// docAdvice reads the "reconnect?" column of docs/protocol.md.
func docAdvice(text string) (Reconnect, bool) {
	switch {
	case strings.HasPrefix(text, "as the application wishes"):
		return ReconnectIfWanted, true
	case strings.HasPrefix(text, "with a new token"):
		return ReconnectWithNewToken, true
	case strings.HasPrefix(text, "yes, later"):
		return ReconnectLater, true
	case strings.HasPrefix(text, "yes"):
		return ReconnectWithBackoff, true
	case strings.HasPrefix(text, "fix the client"):
		return ReconnectAfterFix, true
	case text == "no" || strings.HasPrefix(text, "no:"):
		return ReconnectNever, true
	}
	return 0, false
}

// TestClosesAgreeWithDocs: the close codes table of docs/protocol.md lists
// exactly the closes here, with the same names and reconnect advice.
func TestClosesAgreeWithDocs(t *testing.T) {
	documented := map[CloseCode]bool{}
	for _, row := range docTable(t, "## Close codes") {
		n, err := strconv.Atoi(row[0])
		if err != nil || len(row) < 4 {
			t.Fatalf("close codes table: row %q", row)
		}
		code := CloseCode(n)
		documented[code] = true
		cl, ok := LookupClose(code)
		if !ok {
			t.Errorf("docs/protocol.md documents close %d, which pkg/wire does not name", n)
			continue
		}
		if row[1] != cl.Name {
			t.Errorf("close %d: docs name it %q, pkg/wire %q", n, row[1], cl.Name)
		}
		if adv, ok := docAdvice(row[3]); !ok || adv != cl.Reconnect {
			t.Errorf("close %d: docs advise %q, pkg/wire %q", n, row[3], cl.Reconnect)
		}
	}
	for _, cl := range Closes() {
		if !documented[cl.Code] {
			t.Errorf("close %d (%s) is missing from docs/protocol.md, Close codes", cl.Code, cl.Name)
		}
	}
	// The shell section's table repeats two of them.
	for _, row := range docTable(t, "## Shell sessions (`shell` prefix): 1:1 connections to a host") {
		if n, err := strconv.Atoi(row[0]); err == nil && row[1] != CloseCode(n).String() {
			t.Errorf("shell close %d: docs name it %q, pkg/wire %q", n, row[1], CloseCode(n))
		}
	}
}

func TestCloseLookup(t *testing.T) {
	seen := map[string]bool{}
	for i, cl := range Closes() {
		if i > 0 && cl.Code <= Closes()[i-1].Code {
			t.Errorf("closes not in code order at %d", cl.Code)
		}
		if seen[cl.Name] {
			t.Errorf("two closes named %q", cl.Name)
		}
		seen[cl.Name] = true
		if got, ok := LookupClose(cl.Code); !ok || got != cl || cl.Code.String() != cl.Name || cl.Code.Reconnect() != cl.Reconnect {
			t.Errorf("LookupClose(%d) = %+v %v", cl.Code, got, ok)
		}
	}
	if _, ok := LookupClose(4999); ok || CloseCode(4999).String() != "unknown" || CloseCode(4999).Reconnect() != ReconnectWithBackoff {
		t.Error("an unknown code must be named unknown and advise reconnecting with backoff")
	}
	if CloseDenied.Reconnect().Retry() || CloseSuperseded.Reconnect().Retry() || !CloseTokenExpired.Reconnect().Retry() || !CloseGoingAway.Reconnect().Retry() {
		t.Error("Retry: 4003 and 4009 must not be retried; 4001 and 1001 must")
	}
}

// TestCloseReasons: every reason is named once, and the code the server
// sends for it is a close of the contract that the server sends.
func TestCloseReasons(t *testing.T) {
	seen := map[CloseReason]bool{}
	for _, r := range CloseReasons() {
		if seen[r] || !r.Known() {
			t.Errorf("reason %q listed twice or not known", r)
		}
		seen[r] = true
		code, ok := r.Code()
		silent := r == ReasonPeerClosed || r == ReasonReadError || r == ReasonWriteError
		if ok == silent {
			t.Errorf("reason %q: sends a code: %v; want %v", r, ok, !silent)
		}
		if _, named := LookupClose(code); ok && (!named || code == CloseAbnormal) {
			t.Errorf("reason %q sends %d, which is not a close the server sends", r, code)
		}
	}
	if _, ok := CloseReason("nonsense").Code(); ok || CloseReason("nonsense").Known() {
		t.Error("an unknown reason has no code")
	}
}

// errorCodes returns the ErrorCode constants declared in errors.go.
func errorCodes(t *testing.T) []ErrorCode {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []ErrorCode
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "ErrorCode" {
				t.Errorf("const %s in errors.go is not an ErrorCode", vs.Names[0])
				continue
			}
			for _, v := range vs.Values {
				s, err := strconv.Unquote(v.(*ast.BasicLit).Value)
				if err != nil {
					t.Fatal(err)
				}
				codes = append(codes, ErrorCode(s))
			}
		}
	}
	return codes
}

// TestErrorCodesAgreeWithDocs: the HTTP errors table of docs/protocol.md
// lists exactly the error codes here.
func TestErrorCodesAgreeWithDocs(t *testing.T) {
	codes := errorCodes(t)
	if len(codes) < 40 {
		t.Fatalf("found only %d error codes in errors.go", len(codes))
	}
	form := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	documented := map[ErrorCode]bool{}
	for _, row := range docTable(t, "## HTTP errors") {
		documented[ErrorCode(row[1])] = true
		if !slices.Contains(codes, ErrorCode(row[1])) {
			t.Errorf("docs/protocol.md documents error %q, which pkg/wire does not name", row[1])
		}
	}
	for i, c := range codes {
		if !form.MatchString(string(c)) || slices.Contains(codes[:i], c) {
			t.Errorf("error code %q: malformed or declared twice", c)
		}
		if !documented[c] {
			t.Errorf("error code %q is missing from docs/protocol.md, HTTP errors", c)
		}
	}
}
