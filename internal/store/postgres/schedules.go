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

// The test_schedules table is described in
// migrations/00010_test_schedules.sql.

var _ store.ScheduleStore = (*Store)(nil)

const scheduleCols = `definition, owner, every_us, next_at, max_running, created_at`

func scanSchedule(row pgx.Row) (store.Schedule, error) {
	var (
		s     store.Schedule
		every int64
	)
	if err := row.Scan(&s.Definition, &s.Owner, &every, &s.Next, &s.MaxRunning, &s.CreatedAt); err != nil {
		return store.Schedule{}, err
	}
	s.Every, s.Next, s.CreatedAt = jobcodec.FromDurationMicros(every), s.Next.UTC(), s.CreatedAt.UTC()
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
	return s.inTx(ctx, fmt.Sprintf("put schedule %q", sc.Definition), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO test_schedules (`+scheduleCols+`) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (definition) DO UPDATE SET owner = excluded.owner, every_us = excluded.every_us,
			next_at = excluded.next_at, max_running = excluded.max_running, created_at = excluded.created_at`,
			sc.Definition, sc.Owner, jobcodec.DurationMicros(sc.Every), jobcodec.StoredTime(sc.Next), sc.MaxRunning,
			jobcodec.StoredTime(sc.CreatedAt))
		return err
	})
}

// Schedule implements store.ScheduleStore.
func (s *Store) Schedule(ctx context.Context, definition string) (store.Schedule, error) {
	var sc store.Schedule
	err := s.query(ctx, fmt.Sprintf("schedule %q", definition), func(conn *pgxpool.Conn) error {
		var err error
		sc, err = scanSchedule(conn.QueryRow(ctx, `SELECT `+scheduleCols+` FROM test_schedules WHERE definition = $1`, definition))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return store.Schedule{}, err
	}
	return sc, nil
}

// DeleteSchedule implements store.ScheduleStore.
func (s *Store) DeleteSchedule(ctx context.Context, definition string) error {
	return s.inTx(ctx, fmt.Sprintf("delete schedule %q", definition), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM test_schedules WHERE definition = $1`, definition)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return nil
	})
}

// Schedules implements store.ScheduleStore.
func (s *Store) Schedules(ctx context.Context) ([]store.Schedule, error) {
	var out []store.Schedule
	err := s.query(ctx, "schedules", func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT `+scheduleCols+` FROM test_schedules ORDER BY definition`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Schedule, error) { return scanSchedule(row) })
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AdvanceSchedule implements store.ScheduleStore.
func (s *Store) AdvanceSchedule(ctx context.Context, definition string, from, to time.Time) (bool, error) {
	var moved bool
	err := s.inTx(ctx, fmt.Sprintf("advance schedule %q", definition), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE test_schedules SET next_at = $1 WHERE definition = $2 AND next_at = $3`,
			jobcodec.StoredTime(to), definition, jobcodec.StoredTime(from))
		moved = tag.RowsAffected() == 1
		return err
	})
	return moved, err
}
