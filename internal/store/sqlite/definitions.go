package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/jobcodec"
)

// The test_definitions table is described in
// migrations/00008_test_definitions.sql. PutDefinition reads the newest
// version and inserts the next in one write transaction (the single
// writer connection serialises them).

var _ store.DefinitionStore = (*Store)(nil)

const definitionCols = `name, version, owner, spec, created_at`

func scanDefinition(row scanner) (store.Definition, error) {
	var (
		d       store.Definition
		spec    string
		created int64
	)
	if err := row.Scan(&d.Name, &d.Version, &d.Owner, &spec, &created); err != nil {
		return store.Definition{}, err
	}
	d.Spec, d.CreatedAt = []byte(spec), fromMicros(created)
	return d, nil
}

// PutDefinition implements store.DefinitionStore.
func (s *Store) PutDefinition(ctx context.Context, d store.Definition) (store.Definition, error) {
	if err := d.Validate(); err != nil {
		return store.Definition{}, err
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = time.Now()
	}
	d.CreatedAt = jobcodec.StoredTime(d.CreatedAt)
	err := s.inTx(ctx, fmt.Sprintf("put definition %q", d.Name), func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM test_definitions WHERE name = ?`, d.Name).
			Scan(&d.Version); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO test_definitions (`+definitionCols+`) VALUES (?, ?, ?, ?, ?)`,
			d.Name, d.Version, d.Owner, string(d.Spec), micros(d.CreatedAt))
		return err
	})
	if err != nil {
		return store.Definition{}, err
	}
	return d, nil
}

// Definition implements store.DefinitionStore.
func (s *Store) Definition(ctx context.Context, name string, version int) (store.Definition, error) {
	op := fmt.Sprintf("definition %q version %d", name, version)
	if s.closed.Load() {
		return store.Definition{}, fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	q := `SELECT ` + definitionCols + ` FROM test_definitions WHERE name = ? AND version = ?`
	args := []any{name, version}
	if version == 0 {
		q = `SELECT ` + definitionCols + ` FROM test_definitions WHERE name = ? ORDER BY version DESC LIMIT 1`
		args = args[:1]
	}
	d, err := scanDefinition(s.read.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Definition{}, fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	if err != nil {
		return store.Definition{}, s.wrap(op, err)
	}
	return d, nil
}

// DefinitionVersions implements store.DefinitionStore.
func (s *Store) DefinitionVersions(ctx context.Context, name string) ([]store.Definition, error) {
	return s.queryDefinitions(ctx, "definition versions", `SELECT `+definitionCols+` FROM test_definitions
		WHERE name = ? ORDER BY version`, name)
}

// Definitions implements store.DefinitionStore.
func (s *Store) Definitions(ctx context.Context, owner string) ([]store.Definition, error) {
	return s.queryDefinitions(ctx, "definitions", `SELECT `+definitionCols+` FROM test_definitions AS d
		WHERE (? = '' OR owner = ?)
		AND version = (SELECT MAX(version) FROM test_definitions WHERE name = d.name)
		ORDER BY name`, owner, owner)
}

func (s *Store) queryDefinitions(ctx context.Context, op, q string, args ...any) ([]store.Definition, error) {
	return queryRows(ctx, s, op, q, scanDefinition, args...)
}
