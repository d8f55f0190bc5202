package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestRelayAcrossNATSNodes: a writer on one node reaches readers on two
// other nodes over real nats-servers and one PostgreSQL, in order, from the
// first message after the readers' handshakes.
func TestRelayAcrossNATSNodes(t *testing.T) {
	nodes := servertest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	readers := []*client.Conn{nodes[1].Dial(t, "lab/cam", auth.ScopeRead), nodes[2].Dial(t, "lab/cam", auth.ScopeRead)}
	writer := nodes[0].Dial(t, "lab/cam", auth.ScopeWrite)
	for i := range 20 {
		if err := writer.Write(ctx, client.Text, []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	for r, reader := range readers {
		for i := range 20 {
			_, data, err := reader.Read(ctx)
			if err != nil || string(data) != string(rune('a'+i)) {
				t.Fatalf("reader %d, message %d: %q, %v", r, i, data, err)
			}
		}
	}
}
