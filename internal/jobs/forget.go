package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// ErrAgentConnected is ForgetAgent's refusal of an agent that is
// connected (to any node), or whose disconnection this node is still
// recording.
var ErrAgentConnected = errors.New("jobs: the agent is connected; forget it once it has disconnected")

// AuditForgetAgent is the audit action of ForgetAgent.
const AuditForgetAgent = "agent.forget"

// ForgetAgent forgets a known agent that is not connected (an operator
// decommissioned it): it is deleted from the agents seen, with an audit
// event naming actor, so that later jobs no longer target it (a label
// selector targets every known agent that matches, and an offline target
// ends lost). Runs it already has, in any job, stay as they are: finished
// ones are history, and one still waiting for it is lost after the grace
// period, as before. An agent that connects later is simply known again.
//
// It returns store.ErrNotFound for an agent never seen (or forgotten
// already) and ErrAgentConnected for one connected to any node.
//
// Its check and the deletion hold the agent's lock (lockAgent), which this
// node's AgentConnected and AgentDisconnected take to record the agent: a
// connection here cannot slip between them, and a disconnection being
// recorded (stored as connected on this node, no longer present) is
// refused too rather than having its record put back after the deletion.
// Another node's agents are checked through its announcements: an agent
// that connects to another node in the instant before the deletion,
// before this node hears of it, loses its record until its next
// connection or disconnection records it again (jobs still target it
// meanwhile, as a connected agent); one whose disconnection another node
// records in that instant is recorded again, and can be forgotten again.
func (m *Manager) ForgetAgent(ctx context.Context, id, actor string) error {
	rec, err := m.forgetLocked(ctx, id, actor)
	if err != nil {
		return err
	}
	m.publishAgentEvent("forgotten", rec, nil) // no lock held
	m.log.Info("jobs: agent forgotten", "agent", id, "actor", actor)
	return nil
}

// forgetLocked is ForgetAgent's check and deletion, under the agent's
// lock; it returns the record it deleted.
func (m *Manager) forgetLocked(ctx context.Context, id, actor string) (store.Agent, error) {
	unlock := m.lockAgent(id)
	defer unlock()
	if connected, _ := m.agentsOf().Status(id, ""); connected {
		return store.Agent{}, ErrAgentConnected
	}
	agents, err := m.st.Agents(ctx)
	if err != nil {
		return store.Agent{}, err
	}
	var rec *store.Agent
	for i := range agents {
		if agents[i].ID == id {
			rec = &agents[i]
			break
		}
	}
	if rec == nil {
		return store.Agent{}, fmt.Errorf("jobs: agent %q: %w", Truncate(id, 64), store.ErrNotFound)
	}
	if rec.Connected && rec.Node == m.cfg.NodeID {
		return store.Agent{}, ErrAgentConnected
	}
	detail, _ := json.Marshal(map[string]any{"agent": rec.ID, "labels": rec.Labels, "node": rec.Node,
		"last_seen": rec.LastSeen.UTC().Format(time.RFC3339)})
	ev := store.AuditEvent{Time: m.cfg.Now(), Actor: actor, Action: AuditForgetAgent, Target: "agent:" + id,
		Detail: string(detail)}
	if err := m.st.DeleteAgent(ctx, id, ev); err != nil {
		return store.Agent{}, err
	}
	return *rec, nil
}
