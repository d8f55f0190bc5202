package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/jobcodec"
)

// The jobs, runs and agents tables are described in
// migrations/00002_jobs.sql. Writes run on the single writer connection in
// BEGIN IMMEDIATE transactions, so UpdateJob's read, fn and write are
// serialised with every other write of the process (and, through SQLite's
// write lock, of other processes on the file).

var _ store.JobStore = (*Store)(nil)

const jobCols = `id, run_id, owner, action, targets, params, phase, agents, created_at, started_at, ended_at,
	quote, destruction, exec_duration, error_type, error_summary, updated_at, requirement,
	parent_id, matrix, labels, definition, definition_version`

type scanner interface{ Scan(dest ...any) error }

func scanJob(row scanner) (store.Job, error) {
	var (
		j                                  store.Job
		params, phase, agents              string
		matrix, labels                     string
		created, updated, execUS           int64
		started, ended, quote, destruction sql.NullInt64
	)
	if err := row.Scan(&j.ID, &j.RunID, &j.Owner, &j.Action, &j.Targets, &params, &phase, &agents,
		&created, &started, &ended, &quote, &destruction, &execUS, &j.ErrorType, &j.ErrorSummary, &updated, &j.Require,
		&j.Parent, &matrix, &labels, &j.Definition, &j.DefinitionVersion); err != nil {
		return store.Job{}, err
	}
	if err := jobcodec.DecodeJobColumns(&j, params, agents, matrix, labels); err != nil {
		return store.Job{}, err
	}
	j.Phase = store.Phase(phase)
	j.CreatedAt = fromMicros(created)
	j.StartedAt = fromNullMicros(started)
	j.EndedAt = fromNullMicros(ended)
	j.Quote = fromNullMicros(quote)
	j.Destruction = fromNullMicros(destruction)
	j.ExecDuration = jobcodec.FromDurationMicros(execUS)
	j.UpdatedAt = fromMicros(updated)
	return j, nil
}

func (s *Store) queryJobs(ctx context.Context, op, q string, args ...any) ([]store.Job, error) {
	return queryRows(ctx, s, op, q, scanJob, args...)
}

// CreateJob implements store.JobStore.
func (s *Store) CreateJob(ctx context.Context, j store.Job) error {
	j, enc, err := jobcodec.PrepareJob(j, time.Now())
	if err != nil {
		return err
	}
	op := fmt.Sprintf("create job %q", j.ID)
	return s.inTx(ctx, op, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO jobs (`+jobCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO NOTHING`,
			j.ID, j.RunID, j.Owner, j.Action, j.Targets, enc.Params, string(j.Phase), enc.Agents,
			micros(j.CreatedAt), nullMicros(j.StartedAt), nullMicros(j.EndedAt), nullMicros(j.Quote),
			nullMicros(j.Destruction), jobcodec.DurationMicros(j.ExecDuration), j.ErrorType, j.ErrorSummary,
			micros(j.UpdatedAt), j.Require, j.Parent, enc.Matrix, enc.Labels, j.Definition, j.DefinitionVersion)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("a job with this id exists")
		}
		return nil
	})
}

// Job implements store.JobStore.
func (s *Store) Job(ctx context.Context, id string) (store.Job, error) {
	op := fmt.Sprintf("job %q", id)
	if s.closed.Load() {
		return store.Job{}, fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	j, err := scanJob(s.read.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, fmt.Errorf("sqlite: %s: %w", op, store.ErrNotFound)
	}
	if err != nil {
		return store.Job{}, s.wrap(op, err)
	}
	return j, nil
}

// Jobs implements store.JobStore.
func (s *Store) Jobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	var c conditions
	if f.Owner != "" {
		c.add("owner = ?", f.Owner)
	}
	if len(f.Phases) == 0 {
		c.add("phase <> ?", string(store.PhaseArchived))
	} else {
		phases := make([]any, len(f.Phases))
		for i, p := range f.Phases {
			phases[i] = string(p)
		}
		c.add("phase IN (?"+strings.Repeat(", ?", len(f.Phases)-1)+")", phases...)
	}
	if !f.After.IsZero() {
		c.add("created_at > ?", micros(f.After))
	}
	c.add("parent_id = ?", f.Parent)
	if f.RunID != "" {
		c.add("run_id = ?", f.RunID)
	}
	if f.Action != "" {
		c.add("action = ?", f.Action)
	}
	if f.Definition != "" {
		c.add("definition = ?", f.Definition)
	}
	if f.Label != "" {
		c.add("EXISTS (SELECT 1 FROM json_each(jobs.labels) WHERE json_each.value = ?)", f.Label)
	}
	q := `SELECT ` + jobCols + ` FROM jobs WHERE ` + c.String()
	if f.Last > 0 {
		q = `SELECT ` + jobCols + ` FROM (` + q + ` ORDER BY created_at DESC, id DESC LIMIT ?)`
		c.args = append(c.args, f.Last)
	}
	q += ` ORDER BY created_at, id`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		c.args = append(c.args, f.Limit)
	}
	return s.queryJobs(ctx, "jobs", q, c.args...)
}

// UpdateJob implements store.JobStore. The read, fn and the write happen in
// one write transaction on the single writer connection.
func (s *Store) UpdateJob(ctx context.Context, id string, fn func(*store.Job) error) (store.Job, error) {
	op := fmt.Sprintf("update job %q", id)
	var (
		out   store.Job
		fnErr error
	)
	err := s.inTx(ctx, op, func(tx *sql.Tx) error {
		j, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if fnErr = fn(&j); fnErr != nil {
			return fnErr
		}
		if j.ID != id {
			return fmt.Errorf("the update changed the job id to %q", j.ID)
		}
		j, enc, err := jobcodec.PrepareJob(j, time.Now())
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET run_id = ?, owner = ?, action = ?, targets = ?, params = ?,
			phase = ?, agents = ?, created_at = ?, started_at = ?, ended_at = ?, quote = ?, destruction = ?,
			exec_duration = ?, error_type = ?, error_summary = ?, updated_at = ?, requirement = ?,
			parent_id = ?, matrix = ?, labels = ?, definition = ?, definition_version = ?
			WHERE id = ?`,
			j.RunID, j.Owner, j.Action, j.Targets, enc.Params, string(j.Phase), enc.Agents,
			micros(j.CreatedAt), nullMicros(j.StartedAt), nullMicros(j.EndedAt), nullMicros(j.Quote),
			nullMicros(j.Destruction), jobcodec.DurationMicros(j.ExecDuration), j.ErrorType, j.ErrorSummary,
			micros(j.UpdatedAt), j.Require, j.Parent, enc.Matrix, enc.Labels, j.Definition, j.DefinitionVersion, id)
		out = j
		return err
	})
	if fnErr != nil {
		return store.Job{}, fnErr
	}
	if err != nil {
		return store.Job{}, err
	}
	return out, nil
}

// DeleteJob implements store.JobStore. Its runs go with it (ON DELETE
// CASCADE; foreign_keys is on for every connection).
func (s *Store) DeleteJob(ctx context.Context, id string) error {
	return s.inTx(ctx, fmt.Sprintf("delete job %q", id), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM jobs WHERE id = ?`, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
}

// ActiveJobs implements store.JobStore.
func (s *Store) ActiveJobs(ctx context.Context) ([]store.Job, error) {
	return s.queryJobs(ctx, "active jobs", `SELECT `+jobCols+` FROM jobs
		WHERE phase <> ? AND (phase IN (?, ?) OR destruction IS NOT NULL)
		ORDER BY created_at, id`,
		string(store.PhaseArchived), string(store.PhaseQueued), string(store.PhaseExecuting))
}

const runCols = `job_id, agent_id, state, exit_code, error, started_at, ended_at, stdout, stderr, metrics, files, updated_at`

// PutRun implements store.JobStore.
func (s *Store) PutRun(ctx context.Context, r store.Run) error {
	if err := r.Validate(); err != nil {
		return err
	}
	files, err := jobcodec.EncodeFiles(r.Files)
	if err != nil {
		return fmt.Errorf("sqlite: put run %s/%s: %w", r.JobID, r.AgentID, err)
	}
	now := time.Now()
	return s.inTx(ctx, fmt.Sprintf("put run %s/%s", r.JobID, r.AgentID), func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM jobs WHERE id = ?`, r.JobID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		} else if err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO runs (`+runCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (job_id, agent_id) DO UPDATE SET state = excluded.state, exit_code = excluded.exit_code,
				error = excluded.error, started_at = excluded.started_at, ended_at = excluded.ended_at,
				stdout = excluded.stdout, stderr = excluded.stderr, metrics = excluded.metrics,
				files = excluded.files, updated_at = excluded.updated_at`,
			r.JobID, r.AgentID, string(r.State), r.ExitCode, r.Error, nullMicros(r.StartedAt), nullMicros(r.EndedAt),
			r.Stdout, r.Stderr, jobcodec.EncodeRaw(r.Metrics), files, micros(now))
		return err
	})
}

// Runs implements store.JobStore.
func (s *Store) Runs(ctx context.Context, jobID string) ([]store.Run, error) {
	return s.queryRuns(ctx, fmt.Sprintf("runs of job %q", jobID), `job_id = ?`, jobID)
}

// AgentRuns implements store.JobStore.
func (s *Store) AgentRuns(ctx context.Context, agentID string) ([]store.Run, error) {
	return s.queryRuns(ctx, fmt.Sprintf("unfinished runs of agent %q", agentID),
		`agent_id = ? AND state IN (`+jobcodec.UnfinishedStatesSQL+`)`, agentID)
}

// Run implements store.JobStore.
func (s *Store) Run(ctx context.Context, jobID, agentID string) (store.Run, error) {
	runs, err := s.queryRuns(ctx, fmt.Sprintf("run %q/%q", jobID, agentID), `job_id = ? AND agent_id = ?`, jobID, agentID)
	if err != nil {
		return store.Run{}, err
	}
	if len(runs) == 0 {
		return store.Run{}, store.ErrNotFound
	}
	return runs[0], nil
}

// UnfinishedRuns implements store.JobStore.
func (s *Store) UnfinishedRuns(ctx context.Context, jobID string) (total, unfinished int, err error) {
	op := fmt.Sprintf("count runs of job %q", jobID)
	if s.closed.Load() {
		return 0, 0, fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	err = s.read.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE state IN (`+jobcodec.UnfinishedStatesSQL+`)) FROM runs WHERE job_id = ?`, jobID).Scan(&total, &unfinished)
	if err != nil {
		return 0, 0, s.wrap(op, err)
	}
	return total, unfinished, nil
}

func (s *Store) queryRuns(ctx context.Context, op, where string, args ...any) ([]store.Run, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: %s: %w", op, errClosed)
	}
	rows, err := s.read.QueryContext(ctx, `SELECT `+runCols+` FROM runs WHERE `+where+` ORDER BY agent_id, job_id`, args...)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()
	var out []store.Run
	for rows.Next() {
		var (
			r              store.Run
			state, files   string
			metrics        sql.NullString
			started, ended sql.NullInt64
			updated        int64
		)
		if err := rows.Scan(&r.JobID, &r.AgentID, &state, &r.ExitCode, &r.Error, &started, &ended,
			&r.Stdout, &r.Stderr, &metrics, &files, &updated); err != nil {
			return nil, s.wrap(op, err)
		}
		r.State = store.RunState(state)
		r.StartedAt = fromNullMicros(started)
		r.EndedAt = fromNullMicros(ended)
		if metrics.Valid {
			r.Metrics = jobcodec.DecodeRaw(&metrics.String)
		}
		if r.Files, err = jobcodec.DecodeFiles(files); err != nil {
			return nil, s.wrap(op, fmt.Errorf("run %s/%s: %w", r.JobID, r.AgentID, err))
		}
		r.UpdatedAt = fromMicros(updated)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// ClearResults implements store.JobStore.
func (s *Store) ClearResults(ctx context.Context, jobID string) ([]store.ResultFile, error) {
	var forgot []store.ResultFile
	now := time.Now()
	err := s.inTx(ctx, fmt.Sprintf("clear results of job %q", jobID), func(tx *sql.Tx) error {
		forgot = nil
		rows, err := tx.QueryContext(ctx, `SELECT agent_id, files FROM runs WHERE job_id = ? ORDER BY agent_id`, jobID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var agent, files string
			if err := rows.Scan(&agent, &files); err != nil {
				return err
			}
			fs, err := jobcodec.DecodeFiles(files)
			if err != nil {
				return fmt.Errorf("run %s/%s: %w", jobID, agent, err)
			}
			forgot = append(forgot, fs...)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		_, err = tx.ExecContext(ctx, `UPDATE runs SET stdout = '', stderr = '', files = '[]', updated_at = ?
			WHERE job_id = ?`, micros(now), jobID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return forgot, nil
}

// PutAgent implements store.JobStore.
func (s *Store) PutAgent(ctx context.Context, a store.Agent) error {
	if err := a.Validate(); err != nil {
		return err
	}
	labels, err := jobcodec.EncodeStrings(a.Labels)
	if err != nil {
		return fmt.Errorf("sqlite: put agent %q: %w", a.ID, err)
	}
	return s.inTx(ctx, fmt.Sprintf("put agent %q", a.ID), func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO agents (id, labels, actions, version, node, connected, first_seen, last_seen, remote_addr)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, actions = excluded.actions,
				version = excluded.version, node = excluded.node, connected = excluded.connected,
				first_seen = coalesce(agents.first_seen, excluded.first_seen),
				last_seen = excluded.last_seen, remote_addr = excluded.remote_addr`,
			a.ID, labels, jobcodec.EncodeRaw(a.Actions), a.Version, a.Node, a.Connected,
			nullMicros(a.FirstSeen), nullMicros(a.LastSeen), a.RemoteAddr)
		return err
	})
}

// Agents implements store.JobStore.
func (s *Store) Agents(ctx context.Context) ([]store.Agent, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("sqlite: agents: %w", errClosed)
	}
	rows, err := s.read.QueryContext(ctx, `SELECT id, labels, actions, version, node, connected, first_seen, last_seen, remote_addr
		FROM agents ORDER BY id`)
	if err != nil {
		return nil, s.wrap("agents", err)
	}
	defer rows.Close()
	var out []store.Agent
	for rows.Next() {
		var (
			a                   store.Agent
			labels              string
			actions             sql.NullString
			firstSeen, lastSeen sql.NullInt64
		)
		if err := rows.Scan(&a.ID, &labels, &actions, &a.Version, &a.Node, &a.Connected, &firstSeen, &lastSeen, &a.RemoteAddr); err != nil {
			return nil, s.wrap("agents", err)
		}
		if a.Labels, err = jobcodec.DecodeStrings(labels); err != nil {
			return nil, s.wrap("agents", fmt.Errorf("agent %q: %w", a.ID, err))
		}
		if actions.Valid {
			a.Actions = jobcodec.DecodeRaw(&actions.String)
		}
		a.FirstSeen = fromNullMicros(firstSeen)
		a.LastSeen = fromNullMicros(lastSeen)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("agents", err)
	}
	return out, nil
}

// DisconnectAgents implements store.JobStore.
func (s *Store) DisconnectAgents(ctx context.Context, node string, t time.Time) error {
	return s.inTx(ctx, fmt.Sprintf("disconnect agents of node %q", node), func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE agents SET connected = 0, last_seen = ? WHERE node = ? AND connected = 1`,
			nullMicros(t), node)
		return err
	})
}

// DeleteAgent implements store.JobStore.
func (s *Store) DeleteAgent(ctx context.Context, id string, ev store.AuditEvent) error {
	now := time.Now()
	return s.inTx(ctx, fmt.Sprintf("delete agent %q", id), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return appendAudit(ctx, tx, &ev, now)
	})
}
