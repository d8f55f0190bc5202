package storetest

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// testDefinitions: versions are numbered per name from 1, an older
// version stays as it was, version 0 reads the newest, listings give the
// newest of each name (by owner), specs come back byte for byte.
func testDefinitions(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	put := func(name, owner, spec string) store.Definition {
		t.Helper()
		d, err := s.PutDefinition(ctx, store.Definition{Name: name, Owner: owner, Spec: json.RawMessage(spec), CreatedAt: tz(time.Minute)})
		if err != nil {
			t.Fatalf("PutDefinition(%s): %v", name, err)
		}
		return d
	}
	v1 := put("nightly download", "alice", `{"action":"download","parameters":{"server":["a","b"]}}`)
	v2 := put("nightly download", "alice", `{"action":"download", "parameters":{"server":["a","b","c"]}}`)
	put("ünï <&>", "bob", `{"action":"ping"}`)
	put("Zeta", "alice", `{}`)
	if v1.Version != 1 || v2.Version != 2 {
		t.Fatalf("versions %d, %d, want 1, 2", v1.Version, v2.Version)
	}
	got, err := s.Definition(ctx, "nightly download", 1)
	if err != nil || got.Version != 1 || got.Owner != "alice" || string(got.Spec) != `{"action":"download","parameters":{"server":["a","b"]}}` ||
		!got.CreatedAt.Equal(t0.Add(time.Minute)) || got.CreatedAt.Location() != time.UTC {
		t.Fatalf("version 1: %+v %v", got, err)
	}
	if got, err := s.Definition(ctx, "nightly download", 0); err != nil || got.Version != 2 || string(got.Spec) != string(v2.Spec) {
		t.Fatalf("newest: %+v %v", got, err)
	}
	_, err = s.Definition(ctx, "nightly download", 3)
	checkNotFound(t, "Definition of a version that does not exist", err)
	_, err = s.Definition(ctx, "nope", 0)
	checkNotFound(t, "Definition of an unknown name", err)
	vs, err := s.DefinitionVersions(ctx, "nightly download")
	if err != nil || len(vs) != 2 || vs[0].Version != 1 || vs[1].Version != 2 {
		t.Fatalf("versions: %+v %v", vs, err)
	}
	if vs, err := s.DefinitionVersions(ctx, "nope"); err != nil || len(vs) != 0 {
		t.Fatalf("versions of an unknown name: %+v %v", vs, err)
	}
	names := func(owner string) []string {
		t.Helper()
		ds, err := s.Definitions(ctx, owner)
		if err != nil {
			t.Fatalf("Definitions(%q): %v", owner, err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.Name+"@"+string(rune('0'+d.Version)))
		}
		return out
	}
	if got := names(""); !equalStrings(got, []string{"Zeta@1", "nightly download@2", "ünï <&>@1"}) { // byte order
		t.Fatalf("Definitions: %v", got)
	}
	if got := names("bob"); !equalStrings(got, []string{"ünï <&>@1"}) {
		t.Fatalf("Definitions(bob): %v", got)
	}
	for _, bad := range []store.Definition{
		{Name: "", Spec: json.RawMessage(`{}`)},
		{Name: "a/b", Spec: json.RawMessage(`{}`)},
		{Name: "tab\tname", Spec: json.RawMessage(`{}`)},
		{Name: "ok", Spec: json.RawMessage(`[1]`)},
		{Name: "ok", Spec: json.RawMessage(`{`)},
	} {
		_, err := s.PutDefinition(ctx, bad)
		checkInvalid(t, "PutDefinition("+bad.Name+")", err)
	}
	if _, err := s.Definition(ctx, "ok", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an invalid definition was stored: %v", err)
	}
	// Concurrent changes of one name get distinct versions.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := s.PutDefinition(ctx, store.Definition{Name: "race", Spec: json.RawMessage(`{}`)}); err != nil {
				t.Errorf("concurrent PutDefinition: %v", err)
			}
		})
	}
	wg.Wait()
	if vs, err := s.DefinitionVersions(ctx, "race"); err != nil || len(vs) != 8 || vs[7].Version != 8 {
		t.Fatalf("concurrent versions: %d %v", len(vs), err)
	}
}
