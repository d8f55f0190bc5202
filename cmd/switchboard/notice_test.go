package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoticeListsEveryLinkedModule keeps NOTICE true: every third-party
// module linked into the switchboard binary is named in it, and the NOTICE
// file a module ships (Apache-2.0 asks that it travel with the product) is
// reproduced in it verbatim. It fails when a dependency is added or bumped
// without NOTICE following.
func TestNoticeListsEveryLinkedModule(t *testing.T) {
	notice, err := os.ReadFile(filepath.Join("..", "..", "NOTICE"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("..", "..", "LICENSE")); err != nil {
		t.Fatalf("LICENSE: %v", err)
	}
	cmd := exec.Command("go", "list", "-deps", "-json=Module", ".")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type module struct {
		Path, Version, Dir string
		Main               bool
	}
	seen := map[string]module{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct{ Module *module }
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module != nil && !p.Module.Main {
			seen[p.Module.Path] = *p.Module
		}
	}
	if len(seen) == 0 {
		t.Fatal("go list named no third-party module: the test would prove nothing")
	}
	listed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(notice))
	for sc.Scan() {
		if path, ok := strings.CutPrefix(sc.Text(), "- "); ok {
			path, _, _ = strings.Cut(path, " ")
			listed[path] = true
		}
	}
	for path, m := range seen {
		if !listed[path] {
			t.Errorf("NOTICE does not list %s %s, which the binary links", path, m.Version)
		}
		if m.Dir == "" {
			continue // not downloaded: go list would have failed to build the list
		}
		entries, err := os.ReadDir(m.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(strings.ToUpper(e.Name()), "NOTICE") {
				continue
			}
			text, err := os.ReadFile(filepath.Join(m.Dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(notice, bytes.TrimSpace(text)) {
				t.Errorf("NOTICE does not reproduce %s's %s", path, e.Name())
			}
		}
	}
	for path := range listed {
		if _, ok := seen[path]; !ok {
			t.Errorf("NOTICE lists %s, which the binary no longer links", path)
		}
	}
}
