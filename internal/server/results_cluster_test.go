package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/internal/store/pgtest"
	"github.com/switchboard-hub/switchboard/internal/store/postgres"
)

// TestResultFilesDownloadThroughAnyNode: two nodes on one bus network and
// one PostgreSQL, with result files in the database as `switchboard serve`
// stores them in a cluster. An agent on node a uploads a file of several
// 1 MiB chunks through a; the job's owner downloads it whole, and a byte
// range across a chunk boundary, through node b. The job deleted through b
// takes its files with it, for a too. (With a directory per node, b
// answers 410 result_gone.)
func TestResultFilesDownloadThroughAnyNode(t *testing.T) {
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
		t.Cleanup(func() { bus.Close() }) // after the node's shutdown: an injected bus is the caller's
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

	agentClaims := a.Claims("c1", auth.ScopeAgent)
	agentClaims.Prefix, agentClaims.Agent, agentClaims.Subject = "agent", "c1", "agent-c1"
	agent, err := bench.DialAgent(ctx, a.URL, a.Sign(t, agentClaims),
		jobproto.Hello{Agent: "c1", Actions: []jobproto.Action{{Name: "collect", Timeout: jobproto.Duration(time.Minute)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.CloseNow()
	owner := func(s *servertest.Server) string {
		c := s.Claims("", auth.ScopeJobsWrite)
		c.Subject, c.Prefix = "alice", ""
		return s.Sign(t, c)
	}
	onA, onB := owner(a), owner(b)

	status, h, body := request(t, ctx, "POST", a.URL+"/api/v1/jobs", onA, nil,
		url.Values{"ACTION": {"collect"}, "TARGETS": {"c1"}})
	if status != http.StatusSeeOther {
		t.Fatalf("create the job on a: %d %s", status, body)
	}
	id := strings.TrimPrefix(h.Get("Location"), a.URL+"/api/v1/jobs/")
	if status, _, body := request(t, ctx, "POST", a.URL+"/api/v1/jobs/"+id+"/phase", onA, nil, url.Values{"PHASE": {"RUN"}}); status != http.StatusSeeOther {
		t.Fatalf("RUN: %d %s", status, body)
	}
	m, err := agent.Next(ctx)
	if run, ok := m.(*jobproto.Run); err != nil || !ok || run.Job != id {
		t.Fatalf("the agent's run: %T %+v %v", m, m, err)
	}

	content := make([]byte, 2<<20+12345) // three chunks
	rand.Read(content)
	if status, err := agent.Upload(ctx, id, "capture.bin", content); err != nil || status != http.StatusCreated {
		t.Fatalf("upload through a: %d %v", status, err)
	}
	now := time.Now()
	if err := agent.Send(ctx, jobproto.Result{Type: jobproto.TypeResult, Job: id, Outcome: jobproto.OutcomeSucceeded,
		StartedAt: now.Add(-time.Second), EndedAt: now, Files: []jobproto.File{bench.FileOf("capture.bin", content)}}); err != nil {
		t.Fatal(err)
	}
	if ack, err := agent.AwaitAck(ctx, id); err != nil || ack.Error != "" {
		t.Fatalf("result: %+v %v", ack, err)
	}
	wait.For(t, "the job COMPLETED, seen on b", func() bool {
		_, _, body := request(t, ctx, "GET", b.URL+"/api/v1/jobs/"+id, onB, nil, nil)
		var doc struct{ Phase string }
		return json.Unmarshal(body, &doc) == nil && doc.Phase == "COMPLETED"
	})

	file := b.URL + "/api/v1/jobs/" + id + "/results/c1/capture.bin"
	status, h, body = request(t, ctx, "GET", file, onB, nil, nil)
	sum := sha256.Sum256(content)
	if status != http.StatusOK || !bytes.Equal(body, content) || h.Get("X-Content-SHA256") != hex.EncodeToString(sum[:]) {
		t.Fatalf("download through b: %d, %d bytes (want %d), X-Content-SHA256 %q: %.200s", status, len(body), len(content), h.Get("X-Content-SHA256"), body)
	}
	from, to := 1<<20-1000, 2<<20+999 // the last bytes of chunk 0, all of chunk 1, the first of chunk 2
	status, _, body = request(t, ctx, "GET", file, onB, http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", from, to)}}, nil)
	if status != http.StatusPartialContent || !bytes.Equal(body, content[from:to+1]) {
		t.Fatalf("range through b: %d, %d bytes, want 206 and %d bytes", status, len(body), to+1-from)
	}

	if status, _, body := request(t, ctx, "DELETE", b.URL+"/api/v1/jobs/"+id, onB, nil, nil); status != http.StatusSeeOther {
		t.Fatalf("delete the job through b: %d %s", status, body)
	}
	if files, err := a.Deps.Results.List(ctx, id); err != nil || len(files) != 0 {
		t.Fatalf("the deleted job's files, seen from a: %+v %v", files, err)
	}
}

// request sends an HTTP request with a bearer token (and a form body if
// form is not nil) without following redirects, and returns the status,
// headers and body.
func request(t *testing.T, ctx context.Context, method, url, token string, header http.Header, form url.Values) (int, http.Header, []byte) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json") // the jobs API answers UWS XML by default
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}
