package apispectest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// moduleRoot is the repository root, from this package's directory.
const moduleRoot = "../../.."

// The packages whose routes a node serves are read from the source: the
// server, the access endpoints, control and the jobs API. internal/web is
// the dashboard (its patterns must be x-undescribed), internal/agent the
// host's own status listener (another server).
var (
	routeDirs     = []string{"internal/server", "internal/access", "internal/control", "internal/jobs/uwsapi", "internal/shell", "internal/jobs/agentlink"}
	dashboardDirs = []string{"internal/web"}
)

// notRoutes are registrations that are not routes of the API: the
// server's catch-all, which answers 404 and 405 for everything else.
var notRoutes = map[string]bool{"/": true}

// TestEveryRouteDescribed: every route the server registers (read from the
// source: each Handle or HandleFunc call with a pattern) is an operation of
// the description, every dashboard route is in x-undescribed, and every
// operation of the description is registered.
func TestEveryRouteDescribed(t *testing.T) {
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	api, err := registeredPatterns(routeDirs)
	if err != nil {
		t.Fatal(err)
	}
	dash, err := registeredPatterns(dashboardDirs)
	if err != nil {
		t.Fatal(err)
	}
	described := map[string]bool{}
	for _, p := range d.Patterns() {
		described[p] = true
	}
	registered := map[string]bool{}
	for p, where := range api {
		if notRoutes[p] {
			continue
		}
		registered[p] = true
		if described[p] {
			continue
		}
		t.Errorf("%s registers %q: not in internal/apispec/openapi.yaml (add the operation; a wildcard that spans segments, {x...}, goes in the path item's x-pattern)", where, p)
	}
	for p, where := range dash {
		// The dashboard's own page mux (registerPages) is mounted under
		// /ui/: its patterns are inside the undescribed "/ui/" subtree.
		if !d.undescribed[p] && !strings.Contains(p, " /ui/") && !strings.HasPrefix(p, "/ui/") {
			t.Errorf("%s registers %q: a dashboard route missing from x-undescribed in internal/apispec/openapi.yaml", where, p)
		}
	}
	for _, p := range d.Patterns() {
		if !registered[p] {
			t.Errorf("the description has %q, but no route registers it", p)
		}
	}
	if len(registered) < 25 {
		t.Errorf("only %d routes found in the source: is the scan reading it?", len(registered))
	}
}

// registeredPatterns reads, from the non-test Go files under dirs, the
// pattern of every call X.Handle(pattern, …) or X.HandleFunc(pattern, …),
// evaluating string constants (of the module's packages and net/http's
// Method* names) and loops over constant lists. A pattern it cannot read is
// an error naming its place, so that a new way of registering is noticed.
func registeredPatterns(dirs []string) (map[string]string, error) {
	consts, err := moduleConsts()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, dir := range dirs {
		files, err := goFiles(filepath.Join(moduleRoot, dir), false)
		if err != nil {
			return nil, err
		}
		for _, path := range files {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return nil, err
			}
			ev := &evaluator{consts: consts, pkg: f.Name.Name, imports: importNames(f), loops: map[string][]string{}}
			var failure error
			var walk func(n ast.Node) bool
			walk = func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.RangeStmt:
					// for _, m := range LIST { … m … }
					if id, ok := n.Value.(*ast.Ident); ok {
						if list, ok := ev.list(n.X); ok {
							ev.loops[id.Name] = list
							ast.Inspect(n.Body, walk)
							delete(ev.loops, id.Name)
							return false
						}
					}
				case *ast.CallExpr:
					sel, ok := n.Fun.(*ast.SelectorExpr)
					if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") || len(n.Args) != 2 {
						return true
					}
					where := fmt.Sprintf("%s:%d", filepath.ToSlash(strings.TrimPrefix(path, moduleRoot+"/")), fset.Position(n.Pos()).Line)
					vals, ok := ev.strings(n.Args[0])
					if !ok {
						failure = fmt.Errorf("%s: cannot read the pattern of this route", where)
						return false
					}
					for _, v := range vals {
						// A ServeMux pattern has a path; other Handle
						// methods (access endpoints by prefix) do not.
						if strings.Contains(v, "/") {
							out[v] = where
						}
					}
				}
				return true
			}
			ast.Inspect(f, walk)
			if failure != nil {
				return nil, failure
			}
		}
	}
	return out, nil
}

// goFiles lists the .go files of dir (and below, if deep), tests excluded.
func goFiles(dir string, deep bool) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if p != dir && (!deep || e.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// moduleConsts collects the string constants of every package of the
// module, as "pkgname.Name", plus net/http's method names.
func moduleConsts() (map[string]string, error) {
	consts := map[string]string{}
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		name := "Method" + m[:1] + strings.ToLower(m[1:])
		consts["http."+name] = m
	}
	var files []string
	for _, dir := range []string{"internal", "pkg"} {
		fs, err := goFiles(filepath.Join(moduleRoot, dir), true)
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
	}
	// Constants may be built from others: evaluate until nothing changes.
	type decl struct {
		pkg     string
		imports map[string]string
		name    string
		expr    ast.Expr
	}
	var decls []decl
	for _, path := range files {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return nil, err
		}
		imps := importNames(f)
		for _, dd := range f.Decls {
			gd, ok := dd.(*ast.GenDecl)
			if !ok || (gd.Tok != token.CONST && gd.Tok != token.VAR) {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						decls = append(decls, decl{f.Name.Name, imps, n.Name, vs.Values[i]})
					}
				}
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, d := range decls {
			key := d.pkg + "." + d.name
			if _, done := consts[key]; done {
				continue
			}
			ev := &evaluator{consts: consts, pkg: d.pkg, imports: d.imports}
			if vals, ok := ev.strings(d.expr); ok && len(vals) == 1 {
				consts[key] = vals[0]
				changed = true
			}
		}
	}
	// String lists (var RouteMethods = []string{…}) for range loops.
	for _, d := range decls {
		ev := &evaluator{consts: consts, pkg: d.pkg, imports: d.imports}
		if list, ok := ev.list(d.expr); ok {
			consts[d.pkg+"."+d.name+"[]"] = strings.Join(list, "\x00")
		}
	}
	return consts, nil
}

// importNames maps a file's import names to package names (the last path
// element; the module's packages are named so).
func importNames(f *ast.File) map[string]string {
	out := map[string]string{}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		name := path[strings.LastIndex(path, "/")+1:]
		if imp.Name != nil {
			out[imp.Name.Name] = name
		} else {
			out[name] = name
		}
	}
	return out
}

// evaluator computes the string values of simple expressions.
type evaluator struct {
	consts  map[string]string
	pkg     string
	imports map[string]string
	loops   map[string][]string // loop variables over constant lists
}

// strings returns the values an expression may have (several inside a
// loop over a list).
func (ev *evaluator) strings(e ast.Expr) ([]string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return nil, false
		}
		s, err := strconv.Unquote(e.Value)
		return []string{s}, err == nil
	case *ast.ParenExpr:
		return ev.strings(e.X)
	case *ast.Ident:
		if vals, ok := ev.loops[e.Name]; ok {
			return vals, true
		}
		s, ok := ev.consts[ev.pkg+"."+e.Name]
		return []string{s}, ok
	case *ast.SelectorExpr:
		x, ok := e.X.(*ast.Ident)
		if !ok {
			return nil, false
		}
		pkg, ok := ev.imports[x.Name]
		if !ok {
			return nil, false
		}
		s, ok := ev.consts[pkg+"."+e.Sel.Name]
		return []string{s}, ok
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return nil, false
		}
		l, ok1 := ev.strings(e.X)
		r, ok2 := ev.strings(e.Y)
		if !ok1 || !ok2 {
			return nil, false
		}
		var out []string
		for _, a := range l {
			for _, b := range r {
				out = append(out, a+b)
			}
		}
		return out, true
	}
	return nil, false
}

// list returns the values of a constant list: a []string literal, or a
// package-level variable holding one.
func (ev *evaluator) list(e ast.Expr) ([]string, bool) {
	switch e := e.(type) {
	case *ast.CompositeLit:
		at, ok := e.Type.(*ast.ArrayType)
		if !ok {
			return nil, false
		}
		if id, ok := at.Elt.(*ast.Ident); !ok || id.Name != "string" {
			return nil, false
		}
		var out []string
		for _, el := range e.Elts {
			v, ok := ev.strings(el)
			if !ok || len(v) != 1 {
				return nil, false
			}
			out = append(out, v[0])
		}
		return out, true
	case *ast.Ident:
		s, ok := ev.consts[ev.pkg+"."+e.Name+"[]"]
		return strings.Split(s, "\x00"), ok
	case *ast.SelectorExpr:
		x, ok := e.X.(*ast.Ident)
		if !ok {
			return nil, false
		}
		s, ok := ev.consts[ev.imports[x.Name]+"."+e.Sel.Name+"[]"]
		return strings.Split(s, "\x00"), ok
	}
	return nil, false
}

// TestRouteScanReadsLoops: the scan reads a pattern built in a loop over a
// list of methods, as access.Register builds its routes.
func TestRouteScanReadsLoops(t *testing.T) {
	dir := t.TempDir()
	src := `package demo

import "net/http"

const base = "/{prefix}/{topic...}"

var methods = []string{http.MethodPost, "GET"}

func register(mux *http.ServeMux) {
	for _, m := range methods {
		mux.HandleFunc(m+" "+base, nil)
	}
	mux.Handle("DELETE /x/"+"{id}", nil)
}
`
	if err := os.WriteFile(filepath.Join(dir, "demo.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, "demo.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{"http.MethodPost": "POST", "demo.base": "/{prefix}/{topic...}", "demo.methods[]": "POST\x00GET"}
	ev := &evaluator{consts: consts, pkg: "demo", imports: importNames(f), loops: map[string][]string{}}
	var got []string
	var walk func(n ast.Node) bool
	walk = func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.RangeStmt:
			if list, ok := ev.list(n.X); ok {
				ev.loops[n.Value.(*ast.Ident).Name] = list
				ast.Inspect(n.Body, walk)
				return false
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Handle" || sel.Sel.Name == "HandleFunc") {
				v, ok := ev.strings(n.Args[0])
				if !ok {
					t.Fatalf("cannot read %v", n.Args[0])
				}
				got = append(got, v...)
			}
		}
		return true
	}
	ast.Inspect(f, walk)
	slices.Sort(got)
	want := []string{"DELETE /x/{id}", "GET /{prefix}/{topic...}", "POST /{prefix}/{topic...}"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
