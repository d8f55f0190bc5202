package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// jobRun is one run of an action for a job.
type jobRun struct {
	j       *jobAgent
	job     string
	act     *action
	params  map[string]string // checked, defaults filled in
	timeout time.Duration
	abortCh chan string // the hub's abort, with its reason
	log     *slog.Logger

	startedAt time.Time // when the process started; zero before; guarded by j.mu
}

// execute runs the action and keeps its result; a run interrupted by the
// agent's stop is kept as an interrupted result, sent when the agent next
// connects (the hub marks the run lost, with its metrics and tails).
func (r *jobRun) execute(ctx context.Context) {
	j := r.j
	defer j.st.active.Add(-1)
	res, lost := r.process(ctx)
	if lost {
		r.log.Warn("run interrupted: the agent is stopping; it is reported as interrupted")
		j.st.runsFailed.Add(1)
		j.addResult(res, r)
		os.RemoveAll(j.store.runDir(r.job)) // an interrupted run's files are not uploaded
		return
	}
	if res.Outcome == jobproto.OutcomeSucceeded {
		j.st.runsSucceeded.Add(1)
	} else {
		j.st.runsFailed.Add(1)
	}
	r.log.Info("run ended", "outcome", res.Outcome, "exit_code", res.ExitCode, "error", res.Error, "files", len(res.Files),
		"duration", res.EndedAt.Sub(res.StartedAt).Round(time.Millisecond))
	j.addResult(res, r)
	j.store.forgetRunState(r.job)
}

// process runs the action and builds its result; lost reports that ctx
// ended (the agent is stopping) before the process did.
func (r *jobRun) process(ctx context.Context) (res *storedResult, lost bool) {
	j := r.j
	res = &storedResult{Result: jobproto.Result{Type: jobproto.TypeResult, Job: r.job, Outcome: jobproto.OutcomeFailed,
		ExitCode: -1, StartedAt: time.Now().UTC()}}
	fail := func(format string, args ...any) (*storedResult, bool) {
		res.Error = fmt.Sprintf(format, args...)
		res.EndedAt = time.Now().UTC()
		return res, false
	}
	runDir := j.store.runDir(r.job)
	outDir, workDir, resultFile := filepath.Join(runDir, "output"), filepath.Join(runDir, "work"), filepath.Join(runDir, "result.json")
	os.RemoveAll(runDir)
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fail("cannot make the run's directory: %v", err)
	}
	dir := r.act.cfg.Dir
	if dir == "" {
		dir = workDir
		if err := os.Mkdir(workDir, 0o700); err != nil {
			return fail("cannot make the run's directory: %v", err)
		}
	}
	defer os.RemoveAll(workDir)
	defer os.Remove(resultFile)

	argv := []string{r.act.cfg.Command[0]}
	for _, parts := range r.act.args {
		argv = append(argv, expandArg(parts, r.params))
	}
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Dir: dir, Env: r.env(outDir, resultFile)}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail("pipe: %v", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fail("pipe: %v", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	proc, err := startAction(cmd, j.guard)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fail("start %s: %v", argv[0], err)
	}
	pgid := proc.pgid
	res.StartedAt = time.Now().UTC()
	j.mu.Lock()
	r.startedAt = res.StartedAt
	j.mu.Unlock()
	j.st.runsStarted.Add(1)
	r.log.Info("run started", "pid", pgid)
	rec := &runRecord{Job: r.job, Action: r.act.cfg.Name, StartedAt: res.StartedAt, PGID: pgid}
	if start, boot, err := procIdentity(pgid); err == nil {
		rec.ProcStart, rec.BootID = start, boot
	}
	if err := j.store.recordRun(rec); err != nil {
		r.log.Error("could not record the run in the state directory: a crash of the agent would leave it unreported", "error", err)
	}

	// The readers never wait for the hub; the batcher sends started, then
	// the lines, in its own goroutine.
	logs := newLogBatcher(j, r.job)
	var tails [2]tail
	var readers sync.WaitGroup
	for i, f := range []*os.File{outR, errR} {
		readers.Go(func() { readOutput(f, &tails[i], func(line []byte) { logs.add(i, line) }) })
	}
	readersDone := make(chan struct{})
	go func() {
		readers.Wait()
		close(readersDone)
	}()
	checkpointDone := make(chan struct{})
	go func() {
		defer close(checkpointDone)
		r.checkpointTails(&tails, readersDone)
	}()
	flusherDone := make(chan struct{})
	startedAt := res.StartedAt
	go func() {
		j.sendStarted(r.job, startedAt)
		logs.run(readersDone)
		close(flusherDone)
	}()

	type waited struct {
		ws  syscall.WaitStatus
		ok  bool // ws is known
		err error
	}
	waitDone := make(chan waited, 1)
	go func() {
		ws, ok, err := proc.wait()
		waitDone <- waited{ws, ok, err}
	}()
	timeout := time.NewTimer(r.timeout)
	defer timeout.Stop()
	var (
		killReason string    // why the group was sent SIGTERM; "" if it was not
		killAt     time.Time // when SIGKILL follows
		killTimer  <-chan time.Time
		stopping   = ctx.Done()
		outcome    jobproto.Outcome
		end        waited
	)
	terminate := func(o jobproto.Outcome, reason string) {
		if killReason != "" {
			return
		}
		outcome, killReason = o, reason
		killAt = time.Now().Add(j.killGrace)
		killTimer = time.After(j.killGrace)
		signalGroup(pgid, syscall.SIGTERM)
		r.log.Info("stopping the run's process group", "reason", reason)
	}
wait:
	for {
		select {
		case end = <-waitDone:
			break wait
		case <-timeout.C:
			terminate(jobproto.OutcomeTimedOut, fmt.Sprintf("timed out after %v", r.timeout))
		case reason := <-r.abortCh:
			msg := "aborted by the hub"
			if reason != "" {
				msg += ": " + reason
			}
			terminate(jobproto.OutcomeAborted, msg)
		case <-stopping:
			stopping = nil
			lost = true
			terminate("", "the agent is stopping")
		case <-killTimer:
			killTimer = nil
			signalGroup(pgid, syscall.SIGKILL)
		}
	}
	res.EndedAt = time.Now().UTC()
	// The leader is gone. What is left of its group is killed: at once
	// after a normal exit, after the rest of the grace period if it was
	// being stopped.
	if killReason != "" {
		for time.Now().Before(killAt) && groupAlive(pgid) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	signalGroup(pgid, syscall.SIGKILL)
	// A process that left the group may still hold the output pipes.
	select {
	case <-readersDone:
	case <-time.After(j.killGrace):
		outR.SetReadDeadline(time.Now())
		errR.SetReadDeadline(time.Now())
		<-readersDone
	}
	outR.Close()
	errR.Close()
	<-flusherDone
	<-checkpointDone
	if n := logs.dropped; n > 0 {
		r.log.Info("output lines not sent live (channel down or slow)", "lines", n)
	}
	res.Stdout, res.Stderr = tails[0].String(), tails[1].String()

	var errs []string
	ws, waitErr := end.ws, end.err
	switch {
	case !end.ok:
		res.ExitCode = -1
		errs = append(errs, fmt.Sprintf("wait: %v", waitErr))
	case ws.Signaled():
		res.ExitCode = -1
		errs = append(errs, "killed by signal "+ws.Signal().String())
	default:
		res.ExitCode = ws.ExitStatus()
		if res.ExitCode != 0 {
			errs = append(errs, fmt.Sprintf("exit status %d", res.ExitCode))
		} else if waitErr != nil {
			errs = append(errs, waitErr.Error())
		}
	}
	switch {
	case killReason != "":
		res.Outcome = outcome
		errs = append([]string{killReason}, errs...)
	case end.ok && res.ExitCode == 0 && waitErr == nil:
		res.Outcome = jobproto.OutcomeSucceeded
	default:
		res.Outcome = jobproto.OutcomeFailed
	}
	if lost {
		res.Interrupted, res.Outcome = true, jobproto.OutcomeFailed
		if res.Metrics, err = readMetrics(resultFile); err != nil {
			errs = append(errs, err.Error())
		}
		res.Error = joinNotes("interrupted: "+strings.Join(errs, "; "), nil)
		return res, true
	}
	metrics, err := readMetrics(resultFile)
	if err != nil {
		if res.Outcome == jobproto.OutcomeSucceeded {
			res.Outcome = jobproto.OutcomeFailed
		}
		errs = append(errs, err.Error())
	}
	res.Metrics = metrics
	files, paths, notes := collectFiles(outDir, j.store.dir)
	res.Files, res.Paths = files, paths
	res.Error = joinNotes(strings.Join(errs, "; "), notes)
	return res, false
}

// env is the run's whole environment: the action's env, the pass_env
// variables the agent has, and the SWITCHBOARD_* variables.
func (r *jobRun) env(outDir, resultFile string) []string {
	cfg := r.act.cfg
	env := make([]string, 0, len(cfg.Env)+len(cfg.PassEnv)+4+len(r.params))
	keys := make([]string, 0, len(cfg.Env))
	for k := range cfg.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+cfg.Env[k])
	}
	for _, k := range cfg.PassEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env,
		"SWITCHBOARD_JOB="+r.job,
		"SWITCHBOARD_AGENT="+r.j.cfg.ID,
		"SWITCHBOARD_RESULT="+resultFile,
		"SWITCHBOARD_OUTPUT="+outDir)
	for _, p := range cfg.Params {
		if v, ok := r.params[p.Name]; ok {
			env = append(env, paramEnv(p.Name)+"="+v)
		}
	}
	return env
}

// signalGroup signals a process group; a group already gone is fine.
func signalGroup(pgid int, sig syscall.Signal) {
	_ = syscall.Kill(-pgid, sig)
}

// groupAlive reports whether the process group still has a member (a
// zombie counts: an init that does not reap makes the wait last the
// whole grace period).
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}

// readOutput reads a process's output until EOF: every byte goes to t,
// every line (cut at jobproto.MaxLogLineBytes, without its end) to line,
// which must not keep it.
func readOutput(f *os.File, t *tail, line func([]byte)) {
	br := bufio.NewReaderSize(f, 32<<10)
	var cur []byte
	cut := false
	emit := func() {
		b := bytes.TrimRight(cur, "\r")
		if cut {
			b = trimPartialRune(b)
		}
		line(b)
		cur, cut = cur[:0], false
	}
	for {
		chunk, err := br.ReadSlice('\n')
		t.write(chunk)
		data := chunk
		complete := len(data) > 0 && data[len(data)-1] == '\n'
		if complete {
			data = data[:len(data)-1]
		}
		if !cut {
			if room := jobproto.MaxLogLineBytes - len(cur); len(data) > room {
				cur, cut = append(cur, data[:room]...), true
			} else {
				cur = append(cur, data...)
			}
		}
		if complete {
			emit()
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if len(cur) > 0 || cut {
				emit()
			}
			return
		}
	}
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of b.
func trimPartialRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}

// checkpointTails writes the run's output tails to its directory every
// tailCheckpointInterval while they change, until done is closed. A
// failure is logged once per run.
func (r *jobRun) checkpointTails(tails *[2]tail, done <-chan struct{}) {
	t := time.NewTicker(tailCheckpointInterval)
	defer t.Stop()
	var written [2]int64
	warned := false
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if n := [2]int64{tails[0].written(), tails[1].written()}; n != written {
			if err := r.j.store.checkpointTails(r.job, tails); err != nil && !warned {
				warned = true
				r.log.Warn("could not write the run's output tails to the state directory: a crash of the agent would lose them", "error", err)
			}
			written = n
		}
	}
}

// tail keeps the last jobproto.MaxTailBytes bytes written. It is written
// by one goroutine and read by others.
type tail struct {
	mu    sync.Mutex
	b     []byte
	total int64 // bytes ever written
}

// written returns how many bytes were ever written.
func (t *tail) written() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

func (t *tail) write(p []byte) {
	const n = jobproto.MaxTailBytes
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	if len(p) >= n {
		t.b = append(t.b[:0], p[len(p)-n:]...)
		return
	}
	t.b = append(t.b, p...)
	if len(t.b) > 2*n {
		t.b = append(t.b[:0], t.b[len(t.b)-n:]...)
	}
}

// String returns the tail, starting on a character boundary.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return tailString(string(t.b), jobproto.MaxTailBytes)
}

// Bounds of the output lines a run holds while they wait to be sent.
const (
	// logBatchBytes bounds the line bytes of one Log message (sent to hubs
	// that do not take log chunks), so that even fully escaped it stays
	// within jobproto.MaxMessageBytes.
	logBatchBytes = 64 << 10
	// logBufferLines and logBufferBytes bound the lines waiting, per
	// stream; beyond, lines are dropped and counted.
	logBufferLines = 64 * jobproto.MaxLogLines
	logBufferBytes = 1 << 20
)

// logBatcher sends a run's output lines: as log chunks (jobproto's
// logchunk.go) to a hub that takes them, else as Log messages; at most
// every logFlush, or at once when a chunk or message is full, and what is
// left when the run ends. It never blocks the process: lines that arrive
// while the channel is down, or faster than it takes them, are dropped and
// counted.
type logBatcher struct {
	j   *jobAgent
	job string

	mu      sync.Mutex
	text    [2][]byte // stdout, stderr: whole lines, each ended by '\n'
	lines   [2]int    // lines in text
	dropped int64     // read by the run once run has returned
	full    chan struct{}
	frame   []byte // the chunk being sent; used by flush only
}

var logStreams = [2]string{jobproto.StreamStdout, jobproto.StreamStderr}

func newLogBatcher(j *jobAgent, job string) *logBatcher {
	return &logBatcher{j: j, job: job, full: make(chan struct{}, 1)}
}

// add keeps one line (without its '\n') of stream for sending.
func (b *logBatcher) add(stream int, line []byte) {
	if c, _ := b.j.slot.current(); c == nil {
		b.drop(1)
		return
	}
	b.mu.Lock()
	if b.lines[stream] >= logBufferLines || len(b.text[stream])+len(line)+1 > logBufferBytes {
		b.mu.Unlock()
		b.drop(1)
		return
	}
	b.text[stream] = append(append(b.text[stream], line...), '\n')
	b.lines[stream]++
	full := len(b.text[stream]) >= jobproto.MaxLogChunkBytes ||
		!b.j.takesLogChunks() && (b.lines[stream] >= jobproto.MaxLogLines || len(b.text[stream]) >= logBatchBytes)
	b.mu.Unlock()
	if full {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
}

func (b *logBatcher) drop(n int) {
	b.mu.Lock()
	b.dropped += int64(n)
	b.mu.Unlock()
	b.j.st.drops.Add(int64(n))
}

// run sends the lines until done is closed, then sends what is left.
func (b *logBatcher) run(done <-chan struct{}) {
	t := time.NewTicker(b.j.logFlush)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.full:
		case <-done:
			b.flush()
			return
		}
		b.flush()
	}
}

// flush sends every waiting line.
func (b *logBatcher) flush() {
	chunks := b.j.takesLogChunks()
	for stream := range logStreams {
		for {
			b.mu.Lock()
			limit, maxLines := logBatchBytes, jobproto.MaxLogLines
			if chunks {
				limit, maxLines = jobproto.MaxLogChunkBytes, b.lines[stream]
			}
			text, n := takeLines(b.text[stream], limit, maxLines)
			if n == 0 {
				b.mu.Unlock()
				break
			}
			var msg []byte
			if chunks {
				b.frame = jobproto.AppendLogChunk(b.frame[:0], b.job, logStreams[stream], text)
				msg = b.frame
			} else {
				lines := strings.Split(string(text[:len(text)-1]), "\n")
				msg, _ = json.Marshal(jobproto.Log{Type: jobproto.TypeLog, Job: b.job, Stream: logStreams[stream], Lines: lines})
			}
			rest := copy(b.text[stream], b.text[stream][len(text):])
			b.text[stream] = b.text[stream][:rest]
			b.lines[stream] -= n
			b.mu.Unlock()
			typ := client.Text
			if chunks {
				typ = client.Binary
			}
			if b.j.slot.trySend(context.Background(), typ, msg) {
				b.j.st.sent(len(msg))
			} else {
				b.drop(n)
			}
		}
	}
}

// takeLines returns the first lines of text (whole lines, each ended by
// '\n') that fit in limit bytes, at most maxLines of them, and how many;
// at least one line when text has one.
func takeLines(text []byte, limit, maxLines int) ([]byte, int) {
	end, n := 0, 0
	for end < len(text) && n < maxLines {
		i := bytes.IndexByte(text[end:], '\n')
		if i < 0 || n > 0 && end+i+1 > limit {
			break
		}
		end, n = end+i+1, n+1
	}
	return text[:end], n
}

// readMetrics reads $SWITCHBOARD_RESULT: nothing if the action wrote none
// (or an empty file), else a JSON object of at most
// jobproto.MaxMetricsBytes.
func readMetrics(path string) (json.RawMessage, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("metrics ($SWITCHBOARD_RESULT): %v", err)
	case !fi.Mode().IsRegular():
		return nil, errors.New("metrics ($SWITCHBOARD_RESULT): not a regular file")
	case fi.Size() > jobproto.MaxMetricsBytes:
		return nil, fmt.Errorf("metrics ($SWITCHBOARD_RESULT): %d bytes, more than the %d allowed", fi.Size(), jobproto.MaxMetricsBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("metrics ($SWITCHBOARD_RESULT): %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, jobproto.MaxMetricsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("metrics ($SWITCHBOARD_RESULT): %v", err)
	}
	if len(b) > jobproto.MaxMetricsBytes {
		return nil, fmt.Errorf("metrics ($SWITCHBOARD_RESULT): more than the %d bytes allowed", jobproto.MaxMetricsBytes)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, nil
	}
	var obj map[string]json.RawMessage
	if b[0] != '{' || json.Unmarshal(b, &obj) != nil {
		return nil, errors.New("metrics ($SWITCHBOARD_RESULT): not a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("metrics ($SWITCHBOARD_RESULT): %v", err)
	}
	return buf.Bytes(), nil
}

// collectFiles lists the output files to upload: regular files directly
// in dir whose names are valid (jobproto.ValidFileName), at most
// jobproto.MaxFiles in name order, each with its size and SHA-256. The
// others are named in notes. paths are relative to base.
func collectFiles(dir, base string) (files []jobproto.File, paths map[string]string, notes []string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, []string{"output files: " + err.Error()}
	}
	var skipped []string
	for _, e := range ents {
		name := e.Name()
		switch {
		case !e.Type().IsRegular():
			skipped = append(skipped, fmt.Sprintf("%q (not a regular file)", name))
			continue
		case !jobproto.ValidFileName(name):
			skipped = append(skipped, fmt.Sprintf("%q (invalid name)", name))
			continue
		case len(files) >= jobproto.MaxFiles:
			skipped = append(skipped, fmt.Sprintf("%q (more than %d files)", name, jobproto.MaxFiles))
			continue
		}
		p := filepath.Join(dir, name)
		size, sum, err := hashFile(p)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%q (%v)", name, err))
			continue
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			rel = p
		}
		if paths == nil {
			paths = map[string]string{}
		}
		files = append(files, jobproto.File{Name: name, Size: size, SHA256: sum})
		paths[name] = rel
	}
	if len(skipped) > 0 {
		const show = 10
		msg := "output files skipped: " + strings.Join(skipped[:min(len(skipped), show)], ", ")
		if len(skipped) > show {
			msg += fmt.Sprintf(" and %d more", len(skipped)-show)
		}
		notes = append(notes, msg)
	}
	return files, paths, notes
}

func hashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
