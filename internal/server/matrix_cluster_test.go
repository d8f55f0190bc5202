package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/internal/store/postgres"
)

// TestMatrixJobAcrossTwoNodes: two nodes on one bus network and one
// PostgreSQL; agent c1 on node a, c2 on node b. A matrix job created and
// run through a has runs on both agents; the node that takes a
// combination's last result ends it, and the matrix job completes when
// the last combination ends, whichever node that is: a WAIT on b wakes
// with COMPLETED, and b serves the matrix result.
func TestMatrixJobAcrossTwoNodes(t *testing.T) {
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dbURL := pgtest.Start(t)
	node := func(id string) *servertest.Server {
		bus, err := network.Join(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		db, err := postgres.Open(ctx, dbURL, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return servertest.Start(t, func(c *server.Config, d *server.Deps) {
			c.NodeID, d.Bus, d.Store, d.Results = id, bus, db, db.Blobs()
		})
	}
	a, b := node("a"), node("b")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	action := jobproto.Action{Name: "download", Timeout: jobproto.Duration(time.Minute), Params: []jobproto.Param{
		{Name: "server", Type: jobproto.ParamString, Required: true, Pattern: "[a-z]+"}}}
	dial := func(s *servertest.Server, id string) *bench.SimAgent {
		c := s.Claims(id, auth.ScopeAgent)
		c.Prefix, c.Agent, c.Subject = "agent", id, "agent-"+id
		ag, err := bench.DialAgent(ctx, s.URL, s.Sign(t, c), jobproto.Hello{Agent: id, Actions: []jobproto.Action{action}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ag.CloseNow() })
		return ag
	}
	c1, c2 := dial(a, "c1"), dial(b, "c2")
	owner := func(s *servertest.Server) string {
		c := s.Claims("", auth.ScopeJobsWrite)
		c.Subject, c.Prefix = "alice", ""
		return s.Sign(t, c)
	}
	onA, onB := owner(a), owner(b)

	status, h, body := request(t, ctx, "POST", a.URL+"/api/v1/jobs", onA, nil,
		url.Values{"ACTION": {"download"}, "TARGETS": {"c1,c2"}, "SERVER": {"x", "y"}, "PHASE": {"RUN"}})
	if status != http.StatusSeeOther {
		t.Fatalf("create the matrix job on a: %d %s", status, body)
	}
	id := strings.TrimPrefix(h.Get("Location"), a.URL+"/api/v1/jobs/")
	waited := make(chan string, 1)
	go func() {
		_, _, body := request(t, ctx, "GET", b.URL+"/api/v1/jobs/"+id+"?WAIT=30&PHASE=EXECUTING", onB, nil, nil)
		var doc struct{ Phase string }
		json.Unmarshal(body, &doc)
		waited <- doc.Phase
	}()
	answer := func(ag *bench.SimAgent, n int64) {
		for range 2 {
			m, err := ag.Next(ctx)
			run, ok := m.(*jobproto.Run)
			if err != nil || !ok {
				t.Fatalf("agent %s: %T %v", ag.ID, m, err)
			}
			now := time.Now()
			metrics := fmt.Appendf(nil, `{"bytes_read":%d}`, n+map[string]int64{"x": 1, "y": 2}[run.Params["server"]])
			if err := ag.Send(ctx, jobproto.Result{Type: jobproto.TypeResult, Job: run.Job, Outcome: jobproto.OutcomeSucceeded,
				StartedAt: now.Add(-time.Second), EndedAt: now, Metrics: metrics}); err != nil {
				t.Fatal(err)
			}
			if ack, err := ag.AwaitAck(ctx, run.Job); err != nil || ack.Error != "" {
				t.Fatalf("agent %s: ack %+v %v", ag.ID, ack, err)
			}
		}
	}
	answer(c1, 10)
	answer(c2, 20)
	select {
	case phase := <-waited:
		if phase != "COMPLETED" {
			t.Fatalf("WAIT on b woke with %q, want COMPLETED", phase)
		}
	case <-ctx.Done():
		t.Fatal("WAIT on b did not wake")
	}
	status, _, body = request(t, ctx, "GET", b.URL+"/api/v1/jobs/"+id+"/results/matrix.csv", onB, nil, nil)
	if want := "agent,x,y,total\nc1,11,12,23\nc2,21,22,43\ntotal,32,34,66\n"; status != 200 || string(body) != want {
		t.Fatalf("matrix.csv through b: %d %q, want %q", status, body, want)
	}
}
