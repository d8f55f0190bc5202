package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/natsbus"
	"github.com/switchboard-hub/switchboard/internal/control"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// revocationLosingBus is a node's NATS bus that loses every revocation
// event the node publishes, as a dropped message is lost: the publisher
// sees no error. The embedded bus keeps the rest of its methods.
type revocationLosingBus struct {
	*natsbus.Bus
	lost atomic.Uint64
}

func (b *revocationLosingBus) Publish(m *cluster.Msg) error {
	if m.Subject == control.RevocationsSubject(cluster.DefaultPrefix) {
		b.lost.Add(1)
		return nil
	}
	return b.Bus.Publish(m)
}

// TestRevocationLostOnTheBusIsCaughtUpAcrossTheCluster: two clustered
// nodes (embedded NATS, one PostgreSQL); n1's revocation events never reach
// the bus. A booking denied on n1 closes n2's connection of it with 4003
// within the 2 s all the same (n2 polls the database every 100 ms),
// and n2 refuses the booking; a node that starts afterwards on the same
// database refuses it too.
func TestRevocationLostOnTheBusIsCaughtUpAcrossTheCluster(t *testing.T) {
	var lossy *revocationLosingBus
	nodes := servertest.StartCluster(t, 2, func(i int, cfg *server.Config, deps *server.Deps) {
		cfg.RevocationPoll = 100 * time.Millisecond
		if i == 0 {
			lossy = &revocationLosingBus{Bus: deps.Bus.(*natsbus.Bus)}
			deps.Bus = lossy
		}
	})
	n1, n2 := nodes[0], nodes[1]
	booking := func(s *servertest.Server, b string) string {
		c := s.Claims("lab", auth.ScopeRead)
		c.BookingID = b
		return s.Sign(t, c)
	}
	doomed := n2.DialToken(t, "lab", booking(n2, "b1"))
	n2.DialToken(t, "lab", booking(n2, "b2"))

	admin := n1.Claims("", auth.ScopeAdmin)
	admin.Subject, admin.Prefix = "operator", ""
	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/bids/deny?bid=b1&exp=%d", n1.URL, time.Now().Add(time.Hour).Unix()), nil)
	req.Header.Set("Authorization", "Bearer "+n1.Sign(t, admin))
	denied := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("deny on n1: %d", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait.Default)
	defer cancel()
	var ce *client.CloseError
	if _, _, err := doomed.Read(ctx); !errors.As(err, &ce) || ce.Code != wire.CloseDenied {
		t.Fatalf("n2's connection of the denied booking: %v, want close %d", err, wire.CloseDenied)
	}
	if took := time.Since(denied); took > 2*time.Second {
		t.Fatalf("n2 closed the denied booking's connection %v after the deny, want within 2 s", took)
	}
	if lossy.lost.Load() != 1 {
		t.Fatalf("n1's bus lost %d revocation events, want 1", lossy.lost.Load())
	}
	if _, err := client.Dial(ctx, n2.URL, "lab", booking(n2, "b1"), nil); err == nil {
		t.Fatal("n2 admitted the denied booking")
	}
	// The close frame reaches the client before the relay has let go of
	// the connection: wait for that, not for more.
	wait.For(t, "n2 to hold b2's connection only", func() bool { return n2.TopicConns("lab") == 1 })

	later := servertest.Start(t, func(cfg *server.Config, deps *server.Deps) {
		cfg.NodeID, deps.Store = "n3", n1.Deps.Store
	})
	if c, err := client.Dial(ctx, later.URL, "lab", booking(later, "b1"), nil); err == nil {
		c.CloseNow()
		t.Fatal("a node started after the deny admitted the booking")
	}
	later.DialToken(t, "lab", booking(later, "b2"))
}
