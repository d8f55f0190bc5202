package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
)

// A running run's state on disk, in its directory runs/{job}/ of the state
// directory, so that an agent that died (crash, kill -9) can report the
// run when it starts again:
//
//	run.json      runRecord: written when the process started
//	result.json   $SWITCHBOARD_RESULT: the metrics the action wrote so far
//	stdout.tail   the last jobproto.MaxTailBytes of its output, written at
//	stderr.tail   most every tailCheckpointInterval while it runs
//
// They are removed once the run's result is stored.
const (
	runRecordFile = "run.json"
	stdoutTail    = "stdout.tail"
	stderrTail    = "stderr.tail"
)

// tailCheckpointInterval is how often a run's output tails are written to
// its directory at most: what an interrupted run reports is at most this
// old. Written without fsync: they survive the agent's death, not the
// machine's.
const tailCheckpointInterval = 250 * time.Millisecond

// runRecord says which process group a run's process leads, and how to
// tell that group from a later one with the same id.
type runRecord struct {
	Job       string    `json:"job"`
	Action    string    `json:"action"`
	StartedAt time.Time `json:"started_at"`
	PGID      int       `json:"pgid"` // the leader's pid
	// ProcStart is the leader's start time in clock ticks after boot
	// (/proc/<pid>/stat field 22); BootID the boot it belongs to. Both
	// empty where /proc is not available.
	ProcStart uint64 `json:"proc_start,omitempty"`
	BootID    string `json:"boot_id,omitempty"`
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so that a reader (the next agent) sees the old or the new content.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// recordRun writes a started run's record.
func (s *resultStore) recordRun(rec *runRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.runDir(rec.Job), runRecordFile), b)
}

// checkpointTails writes a running run's output tails.
func (s *resultStore) checkpointTails(job string, tails *[2]tail) error {
	dir := s.runDir(job)
	for i, name := range []string{stdoutTail, stderrTail} {
		if err := writeFileAtomic(filepath.Join(dir, name), []byte(tails[i].String())); err != nil {
			return err
		}
	}
	return nil
}

// forgetRunState removes a run's record and tails once its result is
// stored: the run is no longer one to recover.
func (s *resultStore) forgetRunState(job string) {
	for _, name := range []string{runRecordFile, stdoutTail, stderrTail} {
		os.Remove(filepath.Join(s.runDir(job), name))
	}
}

// recoverRun turns the directory of a run that was going when the agent
// died into an interrupted result: what is left of its process group is
// killed (if it is still the run's), and the metrics and tails the run
// left are reported. It returns nil for a directory without a record (the
// process never started).
func (s *resultStore) recoverRun(job string) *storedResult {
	dir := s.runDir(job)
	b, err := os.ReadFile(filepath.Join(dir, runRecordFile))
	if err != nil {
		return nil
	}
	var rec runRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Job != job {
		s.log.Error("run record unreadable; the run is not reported", "job", job, "error", err)
		return nil
	}
	resultFile := filepath.Join(dir, "result.json")
	killed := killLeftoverGroup(&rec, resultFile)
	s.log.Warn("run interrupted by the agent's end found; it is reported as interrupted", "job", job, "action", rec.Action,
		"pgid", rec.PGID, "processes", killed)
	errs := []string{"interrupted: the agent died while the run was going (crash or kill) and reports it on its next start; " + killed}
	metrics, err := readMetrics(resultFile)
	if err != nil {
		errs = append(errs, err.Error())
	}
	readTail := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return tailString(string(b), jobproto.MaxTailBytes)
	}
	return &storedResult{Result: jobproto.Result{Type: jobproto.TypeResult, Job: job, Outcome: jobproto.OutcomeFailed,
		Interrupted: true, ExitCode: -1, Error: joinNotes(strings.Join(errs, "; "), nil),
		StartedAt: rec.StartedAt, EndedAt: time.Now().UTC(), Metrics: metrics,
		Stdout: readTail(stdoutTail), Stderr: readTail(stderrTail)}}
}
