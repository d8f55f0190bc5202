package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/jobcodec"
)

// The test_definitions table is described in
// migrations/00009_test_definitions.sql. PutDefinition takes a transaction
// advisory lock on the name, so that two nodes storing the same name at
// once number their versions one after the other (the primary key would
// refuse the second otherwise).

var _ store.DefinitionStore = (*Store)(nil)

const definitionCols = `name, version, owner, spec, created_at`

func scanDefinition(row pgx.Row) (store.Definition, error) {
	var (
		d    store.Definition
		spec string
	)
	if err := row.Scan(&d.Name, &d.Version, &d.Owner, &spec, &d.CreatedAt); err != nil {
		return store.Definition{}, err
	}
	d.Spec, d.CreatedAt = []byte(spec), d.CreatedAt.UTC()
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
	err := s.inTx(ctx, fmt.Sprintf("put definition %q", d.Name), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('test_definitions:' || $1))`, d.Name); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM test_definitions WHERE name = $1`, d.Name).
			Scan(&d.Version); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO test_definitions (`+definitionCols+`) VALUES ($1, $2, $3, $4, $5)`,
			d.Name, d.Version, d.Owner, string(d.Spec), d.CreatedAt)
		return err
	})
	if err != nil {
		return store.Definition{}, err
	}
	return d, nil
}

// Definition implements store.DefinitionStore.
func (s *Store) Definition(ctx context.Context, name string, version int) (store.Definition, error) {
	q := `SELECT ` + definitionCols + ` FROM test_definitions WHERE name = $1 AND version = $2`
	args := []any{name, version}
	if version == 0 {
		q = `SELECT ` + definitionCols + ` FROM test_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1`
		args = args[:1]
	}
	var d store.Definition
	err := s.query(ctx, fmt.Sprintf("definition %q version %d", name, version), func(conn *pgxpool.Conn) error {
		var err error
		d, err = scanDefinition(conn.QueryRow(ctx, q, args...))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return store.Definition{}, err
	}
	return d, nil
}

// DefinitionVersions implements store.DefinitionStore.
func (s *Store) DefinitionVersions(ctx context.Context, name string) ([]store.Definition, error) {
	return s.queryDefinitions(ctx, "definition versions", `SELECT `+definitionCols+` FROM test_definitions
		WHERE name = $1 ORDER BY version`, name)
}

// Definitions implements store.DefinitionStore.
func (s *Store) Definitions(ctx context.Context, owner string) ([]store.Definition, error) {
	return s.queryDefinitions(ctx, "definitions", `SELECT `+definitionCols+` FROM test_definitions AS d
		WHERE ($1 = '' OR owner = $1)
		AND version = (SELECT MAX(version) FROM test_definitions WHERE name = d.name)
		ORDER BY name`, owner)
}

func (s *Store) queryDefinitions(ctx context.Context, op, q string, args ...any) ([]store.Definition, error) {
	var out []store.Definition
	err := s.query(ctx, op, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Definition, error) { return scanDefinition(row) })
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
