package agentlink

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
)

// The Link over the cluster bus (LinkConfig.Bus): agents connect to any
// node, and a job dispatched on any node reaches them.
//
// Presence: each node announces the agents whose channels it holds on
// <prefix>.agents — an agent's state (hello, running jobs) when it
// registers and whenever its running jobs change, its id when its channel
// ends — numbered by a sequence of the node's own, so that every node
// keeps a directory of the others' agents: Connected and Status cover
// them. A node that comes up (WatchMembers) is asked for its whole list on
// <prefix>.node.<id>.agents; a list or event older than what was applied
// is ignored, and a gap in a node's sequence (a dropped event) asks for
// its list again. A node that leaves takes its agents with it.
//
// Commands: the node holding an agent's channel subscribes to
// <prefix>.agent.<id>.ctl while it does; a run or an abort for an agent
// held elsewhere is published there (the jobproto message as is). Publish
// never waits (the Agents contract: nothing blocks under a job's lock),
// and one publisher's messages keep their order, so an abort never
// overtakes its run. A message that finds no subscriber is lost like one
// that finds a full queue: the run's lost grace period covers it.
//
// The Manager hears of remote agents through RemoteAgentUp and
// RemoteAgentGone, so that the node running the job timers treats them as
// its own (lost grace periods).

// presenceMsg is an event or a list on the presence subjects.
type presenceMsg struct {
	Node string `json:"node"`
	// Epoch is the sender's Link's own random id: a node that restarts
	// under the same id starts a new epoch, and its numbers start again.
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"` // the node's presence sequence: this event's, or the last one a list includes
	// List: the node's agents, all of them (an answer to a list request).
	List bool `json:"list,omitempty"`
	// Agents: an event's one agent (connected, or its running jobs
	// changed), or a list's every agent.
	Agents []remoteState `json:"agents,omitempty"`
	Gone   string        `json:"gone,omitempty"` // an event: this agent's channel ended
}

// remoteState is an agent as its node announces it.
type remoteState struct {
	ID      string            `json:"id"`
	Labels  []string          `json:"labels,omitempty"`
	Actions []jobproto.Action `json:"actions,omitempty"`
	Version string            `json:"version,omitempty"`
	Since   time.Time         `json:"since"`
	Running []string          `json:"running,omitempty"`
}

func (r remoteState) agent() jobs.Agent {
	return jobs.Agent{ID: r.ID, Labels: r.Labels, Actions: r.Actions, Version: r.Version, Since: r.Since}
}

// remoteNode is what this node knows of another's agents.
type remoteNode struct {
	epoch  string                 // the node's Link's epoch
	seq    uint64                 // the last sequence applied
	agents map[string]remoteState // by agent id
}

// linkBus is a Link's part on the bus. Lock order: Link.mu is never held
// while taking pubMu or dirMu; pubMu, then Link.mu (a list reads the
// registered channels); dirMu is taken alone. No lock is held while
// calling the Manager.
type linkBus struct {
	l        *Link
	bus      cluster.Bus
	prefix   string
	self     string
	epoch    string // presenceMsg.Epoch
	presence string // <prefix>.agents

	pubMu sync.Mutex
	seq   uint64                          // guarded by pubMu; the last presence sequence published
	ctl   map[string]cluster.Subscription // agent id → its command subscription; guarded by pubMu

	dirMu  sync.Mutex
	remote map[string]*remoteNode // node id → its agents; guarded by dirMu
	closed bool                   // guarded by dirMu; no list request starts once set

	subs      []cluster.Subscription // presence and list service; set by join
	stopWatch func()                 // set by join
	bg        sync.WaitGroup         // list requests in flight
	ctx       context.Context        // ends at close: list requests give up
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// listTimeout bounds a request for another node's agent list.
const listTimeout = 5 * time.Second

// AgentService is the node service answering with the list of the agents
// it holds (<prefix>.node.<id>.agents).
const AgentService = "agents"

// PresenceSubject returns the subject of agent presence under prefix.
func PresenceSubject(prefix string) string { return prefix + ".agents" }

// CommandSubject returns the subject of the runs and aborts for an agent:
// <prefix>.agent.<id>.ctl, with each "." of the id written %2E (agent ids
// have no "%"), so that the id is one token and no two ids share a
// subject.
func CommandSubject(prefix, agentID string) string {
	return prefix + ".agent." + strings.ReplaceAll(agentID, ".", "%2E") + ".ctl"
}

// joinBus subscribes l to presence and list requests and watches the
// members.
func joinBus(l *Link, bus cluster.Bus, prefix string) (*linkBus, error) {
	if prefix == "" {
		prefix = cluster.DefaultPrefix
	}
	b := &linkBus{l: l, bus: bus, prefix: prefix, self: bus.NodeID(), epoch: rand.Text(), presence: PresenceSubject(prefix),
		ctl: map[string]cluster.Subscription{}, remote: map[string]*remoteNode{}}
	if err := cluster.ValidSubject(b.presence); err != nil {
		return nil, fmt.Errorf("agentlink: BusPrefix: %w", err)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	for subject, h := range map[string]cluster.Handler{
		b.presence: b.onPresence,
		cluster.NodeSubject(prefix, b.self, AgentService): b.onListRequest,
	} {
		sub, err := bus.Subscribe(subject, h)
		if err != nil {
			b.close()
			return nil, fmt.Errorf("agentlink: join the bus: %w", err)
		}
		b.subs = append(b.subs, sub)
	}
	b.stopWatch = bus.WatchMembers(b.onMember)
	return b, nil
}

// close leaves the bus: no more presence, lists or commands. It may be
// called more than once.
func (b *linkBus) close() { b.closeOnce.Do(b.leave) }

func (b *linkBus) leave() {
	if b.stopWatch != nil {
		b.stopWatch()
	}
	b.cancel()
	b.dirMu.Lock()
	b.closed = true
	b.dirMu.Unlock()
	for _, s := range b.subs {
		s.Unsubscribe()
	}
	b.pubMu.Lock()
	for id, s := range b.ctl {
		s.Unsubscribe()
		delete(b.ctl, id)
	}
	b.pubMu.Unlock()
	b.bg.Wait()
}

func stateOf(s *session) remoteState {
	a := s.agent
	return remoteState{ID: a.ID, Labels: a.Labels, Actions: a.Actions, Version: a.Version, Since: a.Since, Running: s.runningJobs()}
}

// announce publishes that s is this node's channel of its agent, with its
// running jobs, and takes the agent's commands (after register, and when
// its running jobs change).
func (b *linkBus) announce(s *session) {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if b.l.session(s.agent.ID) != s {
		return // superseded or gone meanwhile
	}
	if b.ctl[s.agent.ID] == nil {
		sub, err := b.bus.Subscribe(CommandSubject(b.prefix, s.agent.ID), b.onCommand)
		if err != nil {
			b.l.log.Error("agentlink: take an agent's commands from the bus", "agent", s.agent.ID, "err", err)
		} else {
			b.ctl[s.agent.ID] = sub
		}
	}
	b.publishLocked(presenceMsg{Agents: []remoteState{stateOf(s)}})
}

// withdraw publishes that this node no longer holds the agent's channel
// and stops taking its commands (after the current channel ended).
func (b *linkBus) withdraw(agentID string) {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if b.l.session(agentID) != nil {
		return // a newer channel registered meanwhile
	}
	if sub := b.ctl[agentID]; sub != nil {
		sub.Unsubscribe()
		delete(b.ctl, agentID)
	}
	b.publishLocked(presenceMsg{Gone: agentID})
}

// publishLocked numbers and publishes a presence event; pubMu is held, so
// the numbers go out in order.
func (b *linkBus) publishLocked(m presenceMsg) {
	b.seq++
	m.Node, m.Epoch, m.Seq = b.self, b.epoch, b.seq
	body, _ := json.Marshal(m)
	if err := b.bus.Publish(&cluster.Msg{Subject: b.presence, Data: body}); err != nil {
		b.l.log.Warn("agentlink: publish agent presence", "err", err)
	}
}

// onListRequest answers another node with every agent this node holds.
func (b *linkBus) onListRequest(req *cluster.Msg) {
	b.pubMu.Lock()
	m := presenceMsg{Node: b.self, Epoch: b.epoch, Seq: b.seq, List: true}
	b.l.mu.Lock()
	for _, s := range b.l.agents {
		m.Agents = append(m.Agents, stateOf(s))
	}
	b.l.mu.Unlock()
	b.pubMu.Unlock()
	body, _ := json.Marshal(m)
	cluster.Respond(b.bus, req, &cluster.Msg{Data: body})
}

// onMember asks a node that came up for its list, and forgets the agents
// of one that went down.
func (b *linkBus) onMember(ev cluster.MemberEvent) {
	id := ev.Member.ID
	if id == b.self {
		return
	}
	if ev.Up {
		b.requestList(id)
		return
	}
	b.dirMu.Lock()
	n := b.remote[id]
	delete(b.remote, id)
	b.dirMu.Unlock()
	if n != nil {
		for aid := range n.agents {
			b.l.jobs.RemoteAgentGone(aid)
		}
	}
}

// requestList asks node for its agent list in the background.
func (b *linkBus) requestList(node string) {
	b.dirMu.Lock()
	defer b.dirMu.Unlock()
	if b.closed {
		return
	}
	b.bg.Go(func() {
		ctx, cancel := context.WithTimeout(b.ctx, listTimeout)
		defer cancel()
		reply, err := b.bus.Request(ctx, &cluster.Msg{Subject: cluster.NodeSubject(b.prefix, node, AgentService)})
		if err != nil {
			if b.ctx.Err() == nil {
				b.l.log.Warn("agentlink: ask a node for its agents", "node", node, "err", err)
			}
			return
		}
		b.apply(reply.Data)
	})
}

func (b *linkBus) onPresence(m *cluster.Msg) { b.apply(m.Data) }

// apply applies a presence event or list to the directory, and tells the
// Manager which agents came or went.
func (b *linkBus) apply(data []byte) {
	var m presenceMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Node == "" || m.Node == b.self {
		return
	}
	var up []remoteState
	var gone []string
	gap := false
	b.dirMu.Lock()
	n := b.remote[m.Node]
	if n == nil || n.epoch != m.Epoch {
		// A node new to us, or restarted: what we knew of it is void.
		fresh := &remoteNode{epoch: m.Epoch, agents: map[string]remoteState{}}
		if n != nil {
			for id := range n.agents {
				gone = append(gone, id) // unless listed again below
			}
		}
		n = fresh
		b.remote[m.Node] = n
	}
	switch {
	case m.Seq <= n.seq && n.seq != 0:
		// Applied already (a list, or this event, carried it).
	case m.List:
		old := n.agents
		n.agents = make(map[string]remoteState, len(m.Agents))
		for _, a := range m.Agents {
			n.agents[a.ID] = a
			up = append(up, a)
		}
		for id := range old {
			gone = append(gone, id)
		}
		n.seq = m.Seq
	default:
		// Events of one node arrive in order: a number skipped is an
		// event dropped (or one sent before we listened).
		gap = m.Seq != n.seq+1
		n.seq = m.Seq
		for _, a := range m.Agents {
			n.agents[a.ID] = a
			up = append(up, a)
		}
		if m.Gone != "" {
			delete(n.agents, m.Gone)
			gone = append(gone, m.Gone)
		}
	}
	b.dirMu.Unlock()
	if gap {
		b.requestList(m.Node)
	}
	for _, a := range up {
		b.l.jobs.RemoteAgentUp(a.ID, a.Running)
	}
	for _, id := range gone {
		if !b.l.connectedAnywhere(id) {
			b.l.jobs.RemoteAgentGone(id)
		}
	}
}

// lookup returns the agent's state on the node that connected it last,
// if another node holds it.
func (b *linkBus) lookup(agentID string) (remoteState, bool) {
	b.dirMu.Lock()
	defer b.dirMu.Unlock()
	var best remoteState
	found := false
	for _, n := range b.remote {
		if a, ok := n.agents[agentID]; ok && (!found || a.Since.After(best.Since)) {
			best, found = a, true
		}
	}
	return best, found
}

// remoteAgents returns the agents other nodes hold, each once (the latest
// connection when two nodes list it), except those in skip.
func (b *linkBus) remoteAgents(skip map[string]bool) []jobs.Agent {
	b.dirMu.Lock()
	defer b.dirMu.Unlock()
	latest := map[string]remoteState{}
	for _, n := range b.remote {
		for id, a := range n.agents {
			if skip[id] {
				continue
			}
			if cur, ok := latest[id]; !ok || a.Since.After(cur.Since) {
				latest[id] = a
			}
		}
	}
	out := make([]jobs.Agent, 0, len(latest))
	for _, a := range latest {
		out = append(out, a.agent())
	}
	return out
}

// send publishes a command for an agent another node holds, and reports
// whether one does (as far as this node knows) and the bus took it.
func (b *linkBus) send(agentID string, v any) bool {
	if _, ok := b.lookup(agentID); !ok {
		return false
	}
	body, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return b.bus.Publish(&cluster.Msg{Subject: CommandSubject(b.prefix, agentID), Data: body}) == nil
}

// onCommand takes a run or an abort another node sent for an agent this
// node holds, and queues it on the agent's channel as a local send would.
func (b *linkBus) onCommand(m *cluster.Msg) {
	var env jobproto.Envelope
	if json.Unmarshal(m.Data, &env) != nil {
		return
	}
	agentID := agentOfCommand(m.Subject, b.prefix)
	switch env.Type {
	case jobproto.TypeRun:
		var run jobproto.Run
		if json.Unmarshal(m.Data, &run) == nil {
			b.l.sendRunLocal(agentID, run)
		}
	case jobproto.TypeAbort:
		var abort jobproto.Abort
		if json.Unmarshal(m.Data, &abort) == nil {
			b.l.sendAbortLocal(agentID, abort)
		}
	}
}

// agentOfCommand returns the agent id of a command subject.
func agentOfCommand(subject, prefix string) string {
	id := subject[len(prefix+".agent."):]
	return strings.ReplaceAll(id[:len(id)-len(".ctl")], "%2E", ".")
}
