package sqlite

import (
	"io/fs"
	"strconv"
	"strings"
	"testing"
)

// newestMigration returns the version of the newest embedded migration
// (the number its file name starts with), which Open reports as the
// newest version it knows.
func newestMigration(t *testing.T) int {
	t.Helper()
	entries, err := fs.ReadDir(migrations, "migrations")
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
