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

// The test_schedules table is described in
// migrations/00009_test_schedules.sql.

var _ store.ScheduleStore = (*Store)(nil)

const scheduleCols = `definition, owner, every_us, next_at, max_running, created_at`

func scanSchedule(row scanner) (store.Schedule, error) {
	var (
		s                    store.Schedule
		every, next, created int64
	)
	if err := row.Scan(&s.Definition, &s.Owner, &every, &next, &s.MaxRunning, &created); err != nil {
		return store.Schedule{}, err
	}
	s.Every, s.Next, s.CreatedAt = jobcodec.FromDurationMicros(every), fromMicros(next), fromMicros(created)
	return s, nil
}

// PutSchedule implements store.ScheduleStore.
func (s *Store) PutSchedule(ctx context.Context, sc store.Schedule) error {
	if err := sc.Validate(); err != nil {
		return err
	}
	if sc.CreatedAt.IsZero() {
		sc.CreatedAt = time.Now()
	}
	return s.inTx(ctx, fmt.Sprintf("put schedule %q", sc.Definition), func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO test_schedules (`+scheduleCols+`) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (definition) DO UPDATE SET owner = excluded.owner, every_us = excluded.every_us,
			next_at = excluded.next_at, max_running = excluded.max_running, created_at = excluded.created_at`,
			sc.Definition, sc.Owner, jobcodec.DurationMicros(sc.Every), micros(sc.Next), sc.MaxRunning, micros(sc.CreatedAt))
		return err
	})
}

// Schedule implements store.ScheduleStore.
func (s *Store) Schedule(ctx context.Context, definition string) (store.Schedule, error) {
	op := fmt.Sprintf("schedule %q", definition)
	if s.closed.Load() {
		return store.Schedule{}, fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	sc, err := scanSchedule(s.read.QueryRowContext(ctx, `SELECT `+scheduleCols+` FROM test_schedules WHERE definition = ?`, definition))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Schedule{}, fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	if err != nil {
		return store.Schedule{}, s.wrap(op, err)
	}
	return sc, nil
}

// DeleteSchedule implements store.ScheduleStore.
func (s *Store) DeleteSchedule(ctx context.Context, definition string) error {
	return s.inTx(ctx, fmt.Sprintf("delete schedule %q", definition), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM test_schedules WHERE definition = ?`, definition)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
}

// Schedules implements store.ScheduleStore.
func (s *Store) Schedules(ctx context.Context) ([]store.Schedule, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: schedules: %w", errClosed)
	}
	rows, err := s.read.QueryContext(ctx, `SELECT `+scheduleCols+` FROM test_schedules ORDER BY definition`)
	if err != nil {
		return nil, s.wrap("schedules", err)
	}
	defer rows.Close()
	var out []store.Schedule
	for rows.Next() {
		sc, err := scanSchedule(rows)
		if err != nil {
			return nil, s.wrap("schedules", err)
		}
		out = append(out, sc)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("schedules", err)
	}
	return out, nil
}

// AdvanceSchedule implements store.ScheduleStore.
func (s *Store) AdvanceSchedule(ctx context.Context, definition string, from, to time.Time) (bool, error) {
	var moved bool
	err := s.inTx(ctx, fmt.Sprintf("advance schedule %q", definition), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE test_schedules SET next_at = ? WHERE definition = ? AND next_at = ?`,
			micros(to), definition, micros(from))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		moved = n == 1
		return err
	})
	return moved, err
}
