package main

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/cluster/natsbus"
)

// clusterFlags choose the node's bus: alone (the in-memory bus), embedded
// clustered nats-servers, or an external NATS (docs/cluster.md).
type clusterFlags struct {
	listen     string
	peers      []string
	name       string
	secretFile string
	natsURL    string
}

func (f *clusterFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.listen, "cluster-listen", "", "join a cluster: HOST:PORT of this node's embedded NATS route listener (no NATS client port is opened)")
	fs.StringSliceVar(&f.peers, "cluster-peer", nil, "HOST:PORT of another node's --cluster-listen (repeatable; one live peer is enough, gossip finds the rest)")
	fs.StringVar(&f.name, "cluster-name", natsbus.DefaultClusterName, "name of the cluster: nodes with other names do not join it")
	fs.StringVar(&f.secretFile, "cluster-secret-file", "", "file holding the secret that authenticates routes between nodes, the same on every node (default: derived from the token secret, which every node shares)")
	fs.StringVar(&f.natsURL, "nats-url", "", "join a cluster through an external NATS deployment (nats://host:4222, comma-separated for several) instead of embedded servers")
}

// enabled reports whether the node is to join a cluster.
func (f *clusterFlags) enabled() bool { return f.listen != "" || f.natsURL != "" }

// check refuses flag combinations that cannot work, before anything starts.
func (f *clusterFlags) check(databaseURL string) error {
	switch {
	case f.listen != "" && f.natsURL != "":
		return errors.New("--cluster-listen (embedded NATS) and --nats-url (external NATS) are exclusive")
	case !f.enabled() && (len(f.peers) > 0 || f.secretFile != ""):
		return errors.New("--cluster-peer and --cluster-secret-file need --cluster-listen")
	case f.natsURL != "" && (len(f.peers) > 0 || f.secretFile != ""):
		return errors.New("--cluster-peer and --cluster-secret-file are for the embedded NATS (--cluster-listen), not with --nats-url")
	case f.enabled() && databaseURL == "":
		return errors.New("a cluster needs a shared PostgreSQL: --database-url postgres://… (SQLite is one node's alone)")
	}
	return nil
}

// routeSecretInfo is the HKDF info deriving the route secret from the
// token secret when no --cluster-secret-file is given.
const routeSecretInfo = "switchboard cluster routes"

// openBus joins the bus the flags choose: the node's own in-memory bus when
// no cluster flag is set. maxMessage is the largest message the relay
// accepts: the bus must carry it, or the node refuses to start.
func (f *clusterFlags) openBus(nodeID string, tokenSecret []byte, maxMessage int, log *slog.Logger) (cluster.Bus, error) {
	if !f.enabled() {
		return membus.New(nodeID)
	}
	opts := natsbus.Options{NodeID: nodeID, MaxMessage: maxMessage, Logger: log.With("component", "nats")}
	if f.natsURL != "" {
		opts.URL = f.natsURL
	} else {
		secret, err := f.routeSecret(tokenSecret)
		if err != nil {
			return nil, err
		}
		opts.RouteListen, opts.Peers, opts.ClusterName, opts.RouteSecret = f.listen, f.peers, f.name, secret
	}
	bus, err := natsbus.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	log.Info("cluster: joined", "node", nodeID, "route_listen", f.listen, "peers", strings.Join(f.peers, ","), "external_nats", f.natsURL != "")
	return bus, nil
}

// routeSecret reads --cluster-secret-file, or derives the route secret
// from the token secret (so a cluster needs no second secret; the two
// never share a key).
func (f *clusterFlags) routeSecret(tokenSecret []byte) (string, error) {
	if f.secretFile == "" {
		k, err := hkdf.Key(sha256.New, tokenSecret, nil, routeSecretInfo, 32)
		if err != nil {
			return "", fmt.Errorf("cluster: derive the route secret: %w", err)
		}
		return hex.EncodeToString(k), nil
	}
	b, err := os.ReadFile(f.secretFile)
	if err != nil {
		return "", fmt.Errorf("--cluster-secret-file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < natsbus.MinRouteSecretLength {
		return "", fmt.Errorf("--cluster-secret-file %s: %d bytes, want at least %d", f.secretFile, len(s), natsbus.MinRouteSecretLength)
	}
	return s, nil
}

// Defaults of the drain in a cluster, where a load balancer must notice a
// node leaving (the shipped configurations check /readyz every second and
// take a node out after two failures: up to 3 s after it starts failing)
// and its clients reconnect to the others.
const (
	clusterLameDuck    = 5 * time.Second
	clusterDrainWindow = 5 * time.Second
)
