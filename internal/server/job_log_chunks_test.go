package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestJobLogChunks: the hub's welcome asks for log chunks; an agent's
// chunks (binary frames of whole lines) and an older agent's Log messages
// (lines in JSON) land in the same run log, in order, numbered alike; the
// live log topic carries each as one message of lines; output that is not
// valid UTF-8 or lacks its last newline is mended; a binary frame that is
// not a log chunk closes the channel as a protocol breach (1008).
func TestJobLogChunks(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1", "role=client")
	if !c1.Welcome.LogChunks {
		t.Fatalf("the welcome does not ask for log chunks: %+v", c1.Welcome)
	}
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}})
	logConn := s.dial("jobs/"+id+"/log", s.sign(s.claims("jobs/"+id+"/log", auth.ScopeRead)))
	if status, body, _ := s.form("POST", "/api/v1/jobs/"+id+"/phase", user, url.Values{"PHASE": {"RUN"}}); status != http.StatusSeeOther {
		t.Fatalf("RUN: %d %s", status, body)
	}
	nextRun(t, c1)
	send(t, c1, jobproto.Started{Type: jobproto.TypeStarted, Job: id, StartedAt: time.Now()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c1.SendLog(ctx, id, jobproto.StreamStdout, []byte("chunk 1\nchunk 2\n")); err != nil {
		t.Fatal(err)
	}
	send(t, c1, jobproto.Log{Type: jobproto.TypeLog, Job: id, Stream: jobproto.StreamStderr, Lines: []string{"older agent"}})
	if err := c1.SendRaw(ctx, client.Binary, jobproto.AppendLogChunk(nil, id, jobproto.StreamStdout, []byte("bad \xff byte\nno end"))); err != nil {
		t.Fatal(err)
	}
	soFar := "[stdout] chunk 1\n[stdout] chunk 2\n[stderr] older agent\n[stdout] bad \uFFFD byte\n[stdout] no end\n"
	wait.For(t, "c1's log so far", func() bool {
		status, _, body := s.uwsGet("/api/v1/jobs/"+id+"/runs/c1/log", "Bearer "+user, "")
		return status == http.StatusOK && string(body) == soFar
	})
	type logMsg struct {
		Agent, Stream string
		Seq           int64
		Lines         []string
	}
	want := []logMsg{
		{"c1", "stdout", 1, []string{"chunk 1", "chunk 2"}},
		{"c1", "stderr", 3, []string{"older agent"}},
		{"c1", "stdout", 4, []string{"bad \uFFFD byte", "no end"}},
	}
	for i, w := range want {
		_, b, err := logConn.Read(ctx)
		if err != nil {
			t.Fatalf("log topic message %d: %v", i, err)
		}
		var m logMsg
		if err := json.Unmarshal(b, &m); err != nil || m.Agent != w.Agent || m.Stream != w.Stream || m.Seq != w.Seq ||
			len(m.Lines) != len(w.Lines) || m.Lines[0] != w.Lines[0] || m.Lines[len(m.Lines)-1] != w.Lines[len(w.Lines)-1] {
			t.Fatalf("log topic message %d: %s, want %+v", i, b, w)
		}
	}
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded})
	s.waitPhase(user, id, "COMPLETED")
	if status, _, body := s.uwsGet("/api/v1/jobs/"+id+"/results/logs/c1.txt", "Bearer "+user, ""); status != http.StatusOK || string(body) != soFar {
		t.Fatalf("stored log: %d %q, want %q", status, body, soFar)
	}

	// A binary frame that is not a log chunk.
	c2 := s.agent("c2", "role=client")
	if err := c2.SendRaw(ctx, client.Binary, []byte("no header")); err != nil {
		t.Fatal(err)
	}
	var ce *client.CloseError
	if _, err := c2.Next(ctx); !errors.As(err, &ce) || ce.Code != 1008 {
		t.Fatalf("a binary frame that is not a log chunk: %v", err)
	}
}
