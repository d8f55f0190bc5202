package agentlink

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestForgetAgentConnectedToAnotherNode: an agent connected to node b
// cannot be forgotten through node a (whose store record of it says node
// b), nor through b; once its channel has ended it can, through a.
func TestForgetAgentConnectedToAnotherNode(t *testing.T) {
	a, b := twoClusterNodes(t)
	ag, conn := b.connect(t, "ag1", false)
	if err := ag.next(jobproto.TypeWelcome, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "node a to learn of b's agent", func() bool { return slices.Equal(connectedIDs(a.link), []string{"ag1"}) })
	for name, h := range map[string]*harness{"a": a, "b": b} {
		if err := h.jobs.ForgetAgent(t.Context(), "ag1", "ops"); !errors.Is(err, jobs.ErrAgentConnected) {
			t.Fatalf("forget ag1 through %s while connected to b: %v, want ErrAgentConnected", name, err)
		}
	}

	conn.Abort() // the agent's channel on b ends
	wait.For(t, "ag1 recorded disconnected, and gone from a", func() bool {
		known, err := a.st.Agents(t.Context())
		return err == nil && len(known) == 1 && !known[0].Connected && len(connectedIDs(a.link)) == 0
	})
	if err := a.jobs.ForgetAgent(t.Context(), "ag1", "ops"); err != nil {
		t.Fatalf("forget ag1 through a once disconnected: %v", err)
	}
	if known, err := a.st.Agents(t.Context()); err != nil || len(known) != 0 {
		t.Fatalf("agents after forgetting ag1: %+v %v, want none", known, err)
	}
}
