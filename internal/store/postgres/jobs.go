package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/jobcodec"
)

// The jobs, runs and agents tables are described in
// migrations/00002_jobs.sql. UpdateJob reads the job with SELECT … FOR
// UPDATE, so concurrent UpdateJob calls on the same job, from this node or
// another, run one after the other.

var _ store.JobStore = (*Store)(nil)

const jobCols = `id, run_id, owner, action, targets, params, phase, agents, created_at, started_at, ended_at,
	quote, destruction, exec_duration, error_type, error_summary, updated_at, requirement,
	parent_id, matrix, labels, definition, definition_version`

func scanJob(row pgx.Row) (store.Job, error) {
	var (
		j                                  store.Job
		params, phase, agents              string
		matrix, labels                     string
		execUS                             int64
		started, ended, quote, destruction *time.Time
	)
	if err := row.Scan(&j.ID, &j.RunID, &j.Owner, &j.Action, &j.Targets, &params, &phase, &agents,
		&j.CreatedAt, &started, &ended, &quote, &destruction, &execUS, &j.ErrorType, &j.ErrorSummary, &j.UpdatedAt, &j.Require,
		&j.Parent, &matrix, &labels, &j.Definition, &j.DefinitionVersion); err != nil {
		return store.Job{}, err
	}
	if err := jobcodec.DecodeJobColumns(&j, params, agents, matrix, labels); err != nil {
		return store.Job{}, err
	}
	j.Phase = store.Phase(phase)
	j.CreatedAt = j.CreatedAt.UTC()
	j.StartedAt = fromNull(started)
	j.EndedAt = fromNull(ended)
	j.Quote = fromNull(quote)
	j.Destruction = fromNull(destruction)
	j.ExecDuration = jobcodec.FromDurationMicros(execUS)
	j.UpdatedAt = j.UpdatedAt.UTC()
	return j, nil
}

func collectJobs(rows pgx.Rows) ([]store.Job, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Job, error) { return scanJob(row) })
}

// CreateJob implements store.JobStore.
func (s *Store) CreateJob(ctx context.Context, j store.Job) error {
	j, enc, err := jobcodec.PrepareJob(j, time.Now())
	if err != nil {
		return err
	}
	return s.inTx(ctx, fmt.Sprintf("create job %q", j.ID), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO jobs (`+jobCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
				$19, $20, $21, $22, $23)
			ON CONFLICT (id) DO NOTHING`,
			j.ID, j.RunID, j.Owner, j.Action, j.Targets, enc.Params, string(j.Phase), enc.Agents,
			j.CreatedAt, nullTime(j.StartedAt), nullTime(j.EndedAt), nullTime(j.Quote), nullTime(j.Destruction),
			jobcodec.DurationMicros(j.ExecDuration), j.ErrorType, j.ErrorSummary, j.UpdatedAt, j.Require,
			j.Parent, enc.Matrix, enc.Labels, j.Definition, j.DefinitionVersion)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errors.New("a job with this id exists")
		}
		return nil
	})
}

// Job implements store.JobStore.
func (s *Store) Job(ctx context.Context, id string) (store.Job, error) {
	op := fmt.Sprintf("job %q", id)
	var j store.Job
	err := s.query(ctx, op, func(conn *pgxpool.Conn) error {
		var err error
		j, err = scanJob(conn.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = $1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return store.Job{}, err
	}
	return j, nil
}

// Jobs implements store.JobStore.
func (s *Store) Jobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Owner != "" {
		where = append(where, "owner = "+arg(f.Owner))
	}
	if len(f.Phases) == 0 {
		where = append(where, "phase <> "+arg(string(store.PhaseArchived)))
	} else {
		phases := make([]string, len(f.Phases))
		for i, p := range f.Phases {
			phases[i] = string(p)
		}
		where = append(where, "phase = ANY("+arg(phases)+"::text[])")
	}
	if !f.After.IsZero() {
		where = append(where, "created_at > "+arg(f.After))
	}
	where = append(where, "parent_id = "+arg(f.Parent))
	if f.RunID != "" {
		where = append(where, "run_id = "+arg(f.RunID))
	}
	if f.Action != "" {
		where = append(where, "action = "+arg(f.Action))
	}
	if f.Definition != "" {
		where = append(where, "definition = "+arg(f.Definition))
	}
	if f.Label != "" {
		where = append(where, "labels::jsonb ? "+arg(f.Label))
	}
	q := `SELECT ` + jobCols + ` FROM jobs WHERE ` + strings.Join(where, " AND ")
	if f.Last > 0 {
		q = `SELECT ` + jobCols + ` FROM (` + q + ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(f.Last) + `) AS last`
	}
	q += ` ORDER BY created_at, id`
	if f.Limit > 0 {
		q += ` LIMIT ` + arg(f.Limit)
	}
	var out []store.Job
	err := s.query(ctx, "jobs", func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		out, err = collectJobs(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateJob implements store.JobStore. The job's row stays locked (SELECT …
// FOR UPDATE) from the read until the transaction ends.
func (s *Store) UpdateJob(ctx context.Context, id string, fn func(*store.Job) error) (store.Job, error) {
	var (
		out   store.Job
		fnErr error
	)
	err := s.inTx(ctx, fmt.Sprintf("update job %q", id), func(tx pgx.Tx) error {
		j, err := scanJob(tx.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
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
		_, err = tx.Exec(ctx, `UPDATE jobs SET run_id = $2, owner = $3, action = $4, targets = $5, params = $6,
			phase = $7, agents = $8, created_at = $9, started_at = $10, ended_at = $11, quote = $12,
			destruction = $13, exec_duration = $14, error_type = $15, error_summary = $16, updated_at = $17,
			requirement = $18, parent_id = $19, matrix = $20, labels = $21, definition = $22,
			definition_version = $23
			WHERE id = $1`,
			id, j.RunID, j.Owner, j.Action, j.Targets, enc.Params, string(j.Phase), enc.Agents,
			j.CreatedAt, nullTime(j.StartedAt), nullTime(j.EndedAt), nullTime(j.Quote), nullTime(j.Destruction),
			jobcodec.DurationMicros(j.ExecDuration), j.ErrorType, j.ErrorSummary, j.UpdatedAt, j.Require,
			j.Parent, enc.Matrix, enc.Labels, j.Definition, j.DefinitionVersion)
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
// CASCADE).
func (s *Store) DeleteJob(ctx context.Context, id string) error {
	return s.inTx(ctx, fmt.Sprintf("delete job %q", id), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM jobs WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return nil
	})
}

// ActiveJobs implements store.JobStore.
func (s *Store) ActiveJobs(ctx context.Context) ([]store.Job, error) {
	var out []store.Job
	err := s.query(ctx, "active jobs", func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT `+jobCols+` FROM jobs
			WHERE phase <> $1 AND (phase IN ($2, $3) OR destruction IS NOT NULL)
			ORDER BY created_at, id`,
			string(store.PhaseArchived), string(store.PhaseQueued), string(store.PhaseExecuting))
		if err != nil {
			return err
		}
		out, err = collectJobs(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

const runCols = `job_id, agent_id, state, exit_code, error, started_at, ended_at, stdout, stderr, metrics, files, updated_at`

// PutRun implements store.JobStore.
func (s *Store) PutRun(ctx context.Context, r store.Run) error {
	if err := r.Validate(); err != nil {
		return err
	}
	files, err := jobcodec.EncodeFiles(r.Files)
	if err != nil {
		return fmt.Errorf("postgres: put run %s/%s: %w", r.JobID, r.AgentID, err)
	}
	now := utc(time.Now())
	return s.inTx(ctx, fmt.Sprintf("put run %s/%s", r.JobID, r.AgentID), func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM jobs WHERE id = $1`, r.JobID).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		} else if err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO runs (`+runCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (job_id, agent_id) DO UPDATE SET state = excluded.state, exit_code = excluded.exit_code,
				error = excluded.error, started_at = excluded.started_at, ended_at = excluded.ended_at,
				stdout = excluded.stdout, stderr = excluded.stderr, metrics = excluded.metrics,
				files = excluded.files, updated_at = excluded.updated_at`,
			r.JobID, r.AgentID, string(r.State), r.ExitCode, r.Error, nullTime(r.StartedAt), nullTime(r.EndedAt),
			r.Stdout, r.Stderr, jobcodec.EncodeRaw(r.Metrics), files, now)
		return err
	})
}

// Runs implements store.JobStore.
func (s *Store) Runs(ctx context.Context, jobID string) ([]store.Run, error) {
	return s.queryRuns(ctx, fmt.Sprintf("runs of job %q", jobID), `job_id = $1`, jobID)
}

// AgentRuns implements store.JobStore.
func (s *Store) AgentRuns(ctx context.Context, agentID string) ([]store.Run, error) {
	return s.queryRuns(ctx, fmt.Sprintf("unfinished runs of agent %q", agentID),
		`agent_id = $1 AND state IN (`+jobcodec.UnfinishedStatesSQL+`)`, agentID)
}

// Run implements store.JobStore.
func (s *Store) Run(ctx context.Context, jobID, agentID string) (store.Run, error) {
	runs, err := s.queryRuns(ctx, fmt.Sprintf("run %q/%q", jobID, agentID), `job_id = $1 AND agent_id = $2`, jobID, agentID)
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
	err = s.query(ctx, fmt.Sprintf("count runs of job %q", jobID), func(conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE state IN (`+jobcodec.UnfinishedStatesSQL+`)) FROM runs WHERE job_id = $1`, jobID).Scan(&total, &unfinished)
	})
	return total, unfinished, err
}

func (s *Store) queryRuns(ctx context.Context, op, where string, args ...any) ([]store.Run, error) {
	var out []store.Run
	err := s.query(ctx, op, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT `+runCols+` FROM runs WHERE `+where+` ORDER BY agent_id, job_id`, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Run, error) {
			var (
				r              store.Run
				state, files   string
				metrics        *string
				started, ended *time.Time
			)
			if err := row.Scan(&r.JobID, &r.AgentID, &state, &r.ExitCode, &r.Error, &started, &ended,
				&r.Stdout, &r.Stderr, &metrics, &files, &r.UpdatedAt); err != nil {
				return store.Run{}, err
			}
			r.State = store.RunState(state)
			r.StartedAt = fromNull(started)
			r.EndedAt = fromNull(ended)
			r.Metrics = jobcodec.DecodeRaw(metrics)
			r.UpdatedAt = r.UpdatedAt.UTC()
			var err error
			if r.Files, err = jobcodec.DecodeFiles(files); err != nil {
				return store.Run{}, fmt.Errorf("run %s/%s: %w", r.JobID, r.AgentID, err)
			}
			return r, nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ClearResults implements store.JobStore. The runs it reads are locked
// until it has cleared them, and it clears only those, so the files it
// returns are exactly the ones it made the store forget.
func (s *Store) ClearResults(ctx context.Context, jobID string) ([]store.ResultFile, error) {
	var forgot []store.ResultFile
	now := utc(time.Now())
	err := s.inTx(ctx, fmt.Sprintf("clear results of job %q", jobID), func(tx pgx.Tx) error {
		forgot = nil
		rows, err := tx.Query(ctx, `SELECT agent_id, files FROM runs WHERE job_id = $1 ORDER BY agent_id FOR UPDATE`, jobID)
		if err != nil {
			return err
		}
		var agent, files string
		var agents []string
		_, err = pgx.ForEachRow(rows, []any{&agent, &files}, func() error {
			fs, err := jobcodec.DecodeFiles(files)
			if err != nil {
				return fmt.Errorf("run %s/%s: %w", jobID, agent, err)
			}
			forgot = append(forgot, fs...)
			agents = append(agents, agent)
			return nil
		})
		if err != nil || len(agents) == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE runs SET stdout = '', stderr = '', files = '[]', updated_at = $3
			WHERE job_id = $1 AND agent_id = ANY($2::text[])`, jobID, agents, now)
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
		return fmt.Errorf("postgres: put agent %q: %w", a.ID, err)
	}
	return s.inTx(ctx, fmt.Sprintf("put agent %q", a.ID), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO agents (id, labels, actions, version, node, connected, first_seen, last_seen, remote_addr)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, actions = excluded.actions,
				version = excluded.version, node = excluded.node, connected = excluded.connected,
				first_seen = coalesce(agents.first_seen, excluded.first_seen),
				last_seen = excluded.last_seen, remote_addr = excluded.remote_addr`,
			a.ID, labels, jobcodec.EncodeRaw(a.Actions), a.Version, a.Node, a.Connected,
			nullTime(a.FirstSeen), nullTime(a.LastSeen), a.RemoteAddr)
		return err
	})
}

// Agents implements store.JobStore.
func (s *Store) Agents(ctx context.Context) ([]store.Agent, error) {
	var out []store.Agent
	err := s.query(ctx, "agents", func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, `SELECT id, labels, actions, version, node, connected, first_seen, last_seen, remote_addr
			FROM agents ORDER BY id`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Agent, error) {
			var (
				a                   store.Agent
				labels              string
				actions             *string
				firstSeen, lastSeen *time.Time
			)
			if err := row.Scan(&a.ID, &labels, &actions, &a.Version, &a.Node, &a.Connected, &firstSeen, &lastSeen, &a.RemoteAddr); err != nil {
				return store.Agent{}, err
			}
			var err error
			if a.Labels, err = jobcodec.DecodeStrings(labels); err != nil {
				return store.Agent{}, fmt.Errorf("agent %q: %w", a.ID, err)
			}
			a.Actions = jobcodec.DecodeRaw(actions)
			a.FirstSeen = fromNull(firstSeen)
			a.LastSeen = fromNull(lastSeen)
			return a, nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DisconnectAgents implements store.JobStore.
func (s *Store) DisconnectAgents(ctx context.Context, node string, t time.Time) error {
	return s.inTx(ctx, fmt.Sprintf("disconnect agents of node %q", node), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE agents SET connected = false, last_seen = $2 WHERE node = $1 AND connected`,
			node, nullTime(t))
		return err
	})
}

// DeleteAgent implements store.JobStore.
func (s *Store) DeleteAgent(ctx context.Context, id string, ev store.AuditEvent) error {
	now := time.Now()
	return s.inTx(ctx, fmt.Sprintf("delete agent %q", id), func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM agents WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return appendAudit(ctx, tx, []store.AuditEvent{ev}, now)
	})
}
