package server

import (
	"log/slog"

	"switchboard/internal/cluster"
	"switchboard/internal/cluster/membus"
	"switchboard/internal/relay"
)

// busNode is the node's place on the cluster bus: the bus and the relay's
// Peers over it (DESIGN.md §6). The in-memory bus is the only one yet, so
// a node is a cluster of one, and its relay runs through the same paths a
// cluster's will; choosing NATS will be cmd/switchboard's (issue 13,
// item 8).
type busNode struct {
	bus   cluster.Bus
	peers *cluster.RelayPeers
}

// startBus joins a bus as nodeID and connects rs to it. rs must not have
// accepted a connection yet.
func startBus(nodeID string, rs *relay.Server, log *slog.Logger) (*busNode, error) {
	bus, err := membus.New(nodeID)
	if err != nil {
		return nil, err
	}
	peers, err := cluster.NewRelayPeers(cluster.RelayConfig{Bus: bus, Relay: rs, Logger: log})
	if err != nil {
		bus.Close()
		return nil, err
	}
	if err := rs.SetPeers(peers); err != nil {
		peers.Close()
		bus.Close()
		return nil, err
	}
	return &busNode{bus: bus, peers: peers}, nil
}

// close leaves the bus; call it once the relay has shut down.
func (b *busNode) close() {
	b.peers.Close()
	b.bus.Close()
}
