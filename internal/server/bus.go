package server

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/cluster/natsbus"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/relay"
)

// busNode is the node's place on the cluster bus: the bus and the relay's
// Peers over it (DESIGN.md §6). Without an injected bus a node is a
// cluster of one on the in-memory bus, and its relay runs through the same
// paths a cluster's will.
type busNode struct {
	bus   cluster.Bus
	owned bool // the bus was made here, and is closed here
	peers *cluster.RelayPeers
	codes *cluster.CodeRouter // nil until set
	// status answers and gathers node summaries (nil until set).
	status *control.ClusterStatus
	// joined latches once the node has found the cluster (joinedCluster).
	joined atomic.Bool
}

// settler is a bus that can tell when its membership has settled after it
// joined: every member up has had time to be heard (natsbus). A bus without
// it (membus) is settled at once.
type settler interface{ Settled() bool }

// joinedCluster reports whether the node has found the cluster: the bus's
// membership has settled and every member knows what this node's readers
// read and the other way round, so a message written here from now on
// reaches readers anywhere. Until then /readyz fails, so that a load
// balancer sends no client to a node that would relay them only locally.
// Once true it stays true: members joining later are synced before they
// take clients themselves.
func (b *busNode) joinedCluster() bool {
	if b.joined.Load() {
		return true
	}
	if s, ok := b.bus.(settler); ok && !s.Settled() {
		return false
	}
	if !b.peers.Synced() {
		return false
	}
	b.joined.Store(true)
	return true
}

// joinBus connects rs to bus, or to an in-memory bus of its own named
// nodeID when bus is nil. rs must not have accepted a connection yet.
func joinBus(nodeID string, bus cluster.Bus, rs *relay.Server, log *slog.Logger) (_ *busNode, err error) {
	n := &busNode{bus: bus}
	if bus == nil {
		if n.bus, err = membus.New(nodeID); err != nil {
			return nil, err
		}
		n.owned = true
	} else if bus.NodeID() != nodeID {
		return nil, fmt.Errorf("server: the bus is joined as node %q, not %q (--node-id)", bus.NodeID(), nodeID)
	}
	if n.peers, err = cluster.NewRelayPeers(cluster.RelayConfig{Bus: n.bus, Relay: rs, Logger: log}); err == nil {
		if err = rs.SetPeers(n.peers); err != nil {
			n.peers.Close()
		}
	}
	if err != nil {
		if n.owned {
			n.bus.Close()
		}
		return nil, err
	}
	return n, nil
}

// leave tells the other nodes' placement that this node is going: it is
// no topic's home from now on (call it when shutdown begins).
func (b *busNode) leave() {
	if b.codes != nil {
		b.codes.Leave()
	}
}

// close leaves the bus (closing it if it is the node's own); call it once
// the relay has shut down. It may be called more than once.
func (b *busNode) close() {
	if b.status != nil {
		b.status.Close()
	}
	if b.codes != nil {
		b.codes.Close()
	}
	b.peers.Close()
	if b.owned {
		b.bus.Close()
	}
}

// busHealth reports the bus connection for the node's status summary: a
// NATS bus's connection and counters; the in-memory bus is always
// connected.
func (b *busNode) busHealth() control.BusHealth {
	nb, ok := b.bus.(*natsbus.Bus)
	if !ok {
		return control.BusHealth{Kind: "memory", Connected: true}
	}
	st := nb.Status()
	return control.BusHealth{Kind: "nats", Connected: st.Connected, Routes: st.Routes,
		Disconnects: st.Disconnects, Reconnects: st.Reconnects, SlowConsumerEvents: st.SlowConsumerEvents}
}

// nodeState is the node's state in its status summary: what /readyz
// answers.
func (s *Server) nodeState() string {
	switch {
	case s.draining.Load():
		return control.StateDraining
	case !s.bus.joinedCluster():
		return control.StateJoining
	}
	return control.StateReady
}
