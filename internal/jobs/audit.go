package jobs

import (
	"context"
	"encoding/json"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Audit actions of what users do to jobs, recorded by the jobs API (the
// dashboard's Audit page filters by them).
const (
	AuditJobCreate = "job.create"
	AuditJobRun    = "job.run"
	AuditJobAbort  = "job.abort"
	AuditJobDelete = "job.delete"
)

// AuditJob records in the audit log that actor did action to job j
// (target "job:<id>", detail: its action, targets, run id and phase). It
// is called once the change is made: a failure to record it is logged and
// returned, and does not undo the change.
func (m *Manager) AuditJob(ctx context.Context, actor, action string, j store.Job) error {
	detail, _ := json.Marshal(map[string]string{"action": j.Action, "targets": j.Targets, "run_id": j.RunID, "phase": string(j.Phase)})
	ev := store.AuditEvent{Time: m.cfg.Now(), Actor: actor, Action: action, Target: "job:" + j.ID, Detail: string(detail)}
	if _, err := m.st.AppendAudit(ctx, ev); err != nil {
		m.log.Warn("jobs: audit event not recorded", "action", action, "job", j.ID, "actor", Truncate(actor, 64), "err", err)
		return err
	}
	return nil
}
