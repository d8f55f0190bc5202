package storetest

import (
	"io/fs"
	"strconv"
	"strings"
	"testing"
)

// NewestMigration returns the version of the newest migration in dir of
// migrations (the number its file name starts with): what a backend's Open
// reports as the newest version it knows.
func NewestMigration(t testing.TB, migrations fs.FS, dir string) int {
	t.Helper()
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		t.Fatal(err)
	}
	newest := 0
	for _, e := range entries {
		prefix, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(prefix)
		if err != nil {
			t.Fatalf("migration %s: no version number", e.Name())
		}
		newest = max(newest, v)
	}
	return newest
}
