package sqlite

import (
	"context"
	"fmt"
	"strings"
)

// queryRows runs the read query q of the operation op (named in errors)
// and turns each row into a T with scan, in the order q gives.
func queryRows[T any](ctx context.Context, s *Store, op, q string, scan func(scanner) (T, error), args ...any) ([]T, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// conditions collects the conditions of a WHERE clause, with ?
// placeholders, and their arguments in order.
type conditions struct {
	where []string
	args  []any
}

// add appends the condition cond and the arguments of its placeholders.
func (c *conditions) add(cond string, args ...any) {
	c.where = append(c.where, cond)
	c.args = append(c.args, args...)
}

// String joins the conditions with AND.
func (c *conditions) String() string { return strings.Join(c.where, " AND ") }
