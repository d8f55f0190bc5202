package jobs

// Each run's whole output, kept as the result logs/{agent}.txt.
//
// The lines an agent sends (PublishLog, in chunks) go to the live log topic and are
// appended to a spool file of the run on the node holding the agent's
// channel, up to Config.MaxLogBytes, then a marker says where the log was
// cut. The spool becomes the blob LogKey(job, agent) when the run's result
// is taken (TakeResult), or, for a run that never reports (lost, or still
// running when the job was aborted), when its job ends; lines that arrive
// after that are dropped (the log topic has said the job ended). Spool
// files have no name (or are unlinked at creation): a crash leaves nothing
// behind, and the disk, not the memory, holds up to MaxLogBytes per running
// run. With a blob store that can (blob.Dir.CreateSpool), the spool is an
// unnamed file beside the log's blob and becomes it without a copy: a
// talkative run's log is written once.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// DefaultMaxLogBytes bounds the stored log of one run (Config.MaxLogBytes).
const DefaultMaxLogBytes = 4 << 20

// logsSegment is the key segment under a job that holds its runs' logs:
// "~" cannot start an agent id (jobproto.ValidAgentID), so no run's output
// files (RunPrefix) share it, and they do not count against MaxRunBytes.
const logsSegment = "~logs"

// LogPrefix is the blob key prefix of a job's stored run logs.
func LogPrefix(jobID string) string { return jobID + "/" + logsSegment }

// LogKey is the blob key of the stored log of agentID's run of jobID.
func LogKey(jobID, agentID string) string { return LogPrefix(jobID) + "/" + agentID + ".txt" }

// LogAgent returns the agent of a stored log's key (LogKey), if it is one.
func LogAgent(jobID, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, LogPrefix(jobID)+"/")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, ".txt")
}

// LogEnd is the last message of a job's log topic: the job ended in
// Phase; the runs' stored logs are its results logs/{agent}.txt.
type LogEnd struct {
	Event string      `json:"event"` // "end"
	Phase store.Phase `json:"phase"`
}

// runLogs holds the spools of the runs whose output this node receives.
type runLogs struct {
	mu    sync.Mutex
	spool map[string]*runLog // by job + "/" + agent; guarded by mu
}

// runLog is one run's spool.
type runLog struct {
	mu     sync.Mutex
	f      *os.File    // nil once stored (closed): later lines are dropped
	spool  *blob.Spool // f as a blob spool (logSpooler), or nil: f is a temporary file
	size   int64       // bytes written, guarded by mu
	lines  int64       // lines received, kept or not (their seq), guarded by mu
	cut    bool        // the cap was reached and the marker written
	closed bool
	buf    []byte // scratch for the lines of a chunk, guarded by mu
}

// How output lines are kept: "[stdout] text" or "[stderr] text", one per
// line; logCutMarker (with the cap) follows the last line kept when the
// cap was reached.
const logCutMarker = "[switchboard] log cut here: this run's output passed %d bytes (--job-max-log); the rest was not kept\n"

// appendLog adds the output text (whole lines, each ended by '\n', as
// in a jobproto log chunk) of agentID's run of jobID to its spool, each
// line prefixed by its stream, and returns the sequence number of its
// first line (the run's lines count from 1) and the number of lines; first
// is 0 when the run's log is not kept (MaxLogBytes negative, or the job
// ended). Its cost is per chunk: the lines are only found (IndexByte),
// copied once and written with one write.
func (m *Manager) appendLog(jobID, agentID, stream string, text []byte) (first, lines int64) {
	lines = int64(bytes.Count(text, []byte{'\n'}))
	if m.cfg.MaxLogBytes < 0 || lines == 0 {
		return 0, lines
	}
	l := m.runLog(jobID, agentID, true)
	if l == nil {
		return 0, lines
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, lines
	}
	first = l.lines + 1
	l.lines += lines
	if l.cut {
		return first, lines
	}
	prefix := "[" + stream + "] "
	room := m.cfg.MaxLogBytes - l.size
	b := l.buf[:0]
	if need := len(text) + int(lines)*len(prefix); cap(b) < need {
		b = make([]byte, 0, need)
	}
	for len(text) > 0 {
		line := text[:bytes.IndexByte(text, '\n')+1]
		if int64(len(b)+len(prefix)+len(line)) > room {
			b = fmt.Appendf(b, logCutMarker, m.cfg.MaxLogBytes)
			l.cut = true
			break
		}
		b = append(b, prefix...)
		b = append(b, line...)
		text = text[len(line):]
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if cap(b) <= maxLogBufBytes {
		l.buf = b[:0]
	}
	if err != nil && !l.cut {
		m.log.Warn("jobs: write a run's log spool", "job", jobID, "agent", agentID, "err", err)
		_, _ = io.WriteString(l.f, "\n[switchboard] log cut here: the hub could not keep more of it\n")
		l.cut = true
	}
	return first, lines
}

// maxLogBufBytes bounds the buffer a run's spool keeps between chunks.
const maxLogBufBytes = 1 << 20

// RunLogSoFar returns what is kept so far of the log of agentID's run of
// jobID while the run is going on: the lines with sequence numbers 1 to
// the count of "[stdout] "/"[stderr] " lines in it (then, if it was cut,
// the marker). ok is false when this node holds no spool for the run (it
// ended: its log is stored, LogKey; or its agent is connected to another
// node).
func (m *Manager) RunLogSoFar(jobID, agentID string) (data []byte, ok bool) {
	l := m.runLog(jobID, agentID, false)
	if l == nil {
		return nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, false
	}
	data = make([]byte, l.size)
	n, err := l.f.ReadAt(data, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		m.log.Warn("jobs: read a run's log spool", "job", jobID, "agent", agentID, "err", err)
		return nil, false
	}
	return data[:n], true
}

// logSpooler is a blob store that makes a run's log spool where its blob
// will be, and turns it into the blob without a copy (blob.Dir).
type logSpooler interface {
	CreateSpool(key string) (*blob.Spool, error)
}

// runLog returns the spool of a run, creating it if create; nil when none
// (or it cannot be created).
func (m *Manager) runLog(jobID, agentID string, create bool) *runLog {
	key := jobID + "/" + agentID
	m.logs.mu.Lock()
	defer m.logs.mu.Unlock()
	if l := m.logs.spool[key]; l != nil || !create {
		return l
	}
	l := &runLog{}
	if sp, ok := m.blobs.(logSpooler); ok {
		if s, err := sp.CreateSpool(LogKey(jobID, agentID)); err == nil {
			l.f, l.spool = s.File, s
		}
	}
	if l.f == nil {
		f, err := os.CreateTemp("", "switchboard-runlog-*")
		if err != nil {
			m.log.Warn("jobs: create a run's log spool", "job", jobID, "agent", agentID, "err", err)
			return nil
		}
		_ = os.Remove(f.Name()) // the open file outlives its name
		l.f = f
	}
	if m.logs.spool == nil {
		m.logs.spool = map[string]*runLog{}
	}
	m.logs.spool[key] = l
	return l
}

// keepRunLog stores the spool of a run that reported its result as the
// blob LogKey, and forgets it.
func (m *Manager) keepRunLog(ctx context.Context, jobID, agentID string) {
	l := m.runLog(jobID, agentID, false)
	if l == nil {
		return
	}
	m.storeRunLog(ctx, jobID, agentID, l, false)
	m.logs.mu.Lock()
	delete(m.logs.spool, jobID+"/"+agentID)
	m.logs.mu.Unlock()
}

// storeRunLog writes l to the blob store, unless it was already, and
// closes it. With ifAbsent, a log already stored for the run (by the node
// its agent moved to, which took its result) is kept instead.
func (m *Manager) storeRunLog(ctx context.Context, jobID, agentID string, l *runLog, ifAbsent bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	defer l.f.Close()
	if ifAbsent {
		if f, _, err := m.blobs.Open(ctx, LogKey(jobID, agentID)); err == nil {
			f.Close()
			return
		}
	}
	if l.spool != nil {
		if _, err := l.spool.Commit(ctx); err != nil {
			m.log.Error("jobs: store a run's log", "job", jobID, "agent", agentID, "err", err)
		}
		return
	}
	if _, err := l.f.Seek(0, io.SeekStart); err != nil {
		m.log.Error("jobs: read a run's log spool", "job", jobID, "agent", agentID, "err", err)
		return
	}
	if _, err := m.blobs.Put(ctx, LogKey(jobID, agentID), io.LimitReader(l.f, l.size), l.size, nil); err != nil {
		m.log.Error("jobs: store a run's log", "job", jobID, "agent", agentID, "err", err)
	}
}

// endLogs runs when a job ends (phase COMPLETED, ERROR or ABORTED): it
// stores the spools of its runs that did not report, keeping their entries
// closed so that late lines are dropped, and, on the node that ended the
// job (announce), publishes LogEnd on the job's log topic.
func (m *Manager) endLogs(jobID string, phase store.Phase, announce bool) {
	ctx, cancel := bgCtx()
	defer cancel()
	m.logs.mu.Lock()
	var open []string
	for key := range m.logs.spool {
		if strings.HasPrefix(key, jobID+"/") {
			open = append(open, key)
		}
	}
	m.logs.mu.Unlock()
	for _, key := range open {
		agentID := strings.TrimPrefix(key, jobID+"/")
		if l := m.runLog(jobID, agentID, false); l != nil {
			m.storeRunLog(ctx, jobID, agentID, l, true)
		}
	}
	if announce && m.cfg.Publisher != nil {
		b, _ := json.Marshal(LogEnd{Event: "end", Phase: phase})
		m.cfg.Publisher.Publish(LogTopic(jobID), relay.Message{Type: relay.Text, Data: b})
	}
}

// dropLogs forgets the spools of a job that is gone (deleted or archived).
func (m *Manager) dropLogs(jobID string) {
	m.logs.mu.Lock()
	var drop []*runLog
	for key, l := range m.logs.spool {
		if strings.HasPrefix(key, jobID+"/") {
			drop = append(drop, l)
			delete(m.logs.spool, key)
		}
	}
	m.logs.mu.Unlock()
	for _, l := range drop {
		l.mu.Lock()
		if !l.closed {
			l.closed = true
			l.f.Close()
		}
		l.mu.Unlock()
	}
}

// closeLogs closes every spool at Stop. Their lines are not stored: the
// runs go on, and their results will still bring the tails.
func (m *Manager) closeLogs() {
	m.logs.mu.Lock()
	spools := m.logs.spool
	m.logs.spool = nil
	m.logs.mu.Unlock()
	for _, l := range spools {
		l.mu.Lock()
		if !l.closed {
			l.closed = true
			l.f.Close()
		}
		l.mu.Unlock()
	}
}
