package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Defaults of Config.
const (
	DefaultLostGrace    = 60 * time.Second
	DefaultMaxWait      = 60 * time.Second
	DefaultMaxFileBytes = 64 << 20
	DefaultMaxRunBytes  = 256 << 20
	DefaultDestruction  = 30 * 24 * time.Hour
	// DefaultTransferIdleTimeout is how long an upload or a download may
	// go without moving a byte.
	DefaultTransferIdleTimeout = 60 * time.Second
	// DefaultMaxWaitsPerSubject is how many WAIT requests one subject may
	// have blocked at once.
	DefaultMaxWaitsPerSubject = 16
	// storeTimeout bounds one store call made outside a request.
	storeTimeout = 30 * time.Second
)

// AgentsTopic is the system topic carrying agent connection events.
const AgentsTopic = "agents"

// LogTopic returns the topic of a job's live log.
func LogTopic(jobID string) string { return "jobs/" + jobID + "/log" }

// LogTopicPrefix is the prefix of every job's log topic: only the hub
// publishes there.
const LogTopicPrefix = "jobs/"

// Publisher delivers server messages to a relay topic's readers.
type Publisher interface {
	Publish(topic string, m relay.Message) int
}

// Config configures a Manager. Zero values mean the documented defaults.
//
// It holds the settings of the whole jobs subsystem, so that a node's
// flags fill one place and New applies their defaults once: the UWS
// binding (uwsapi) reads MaxWait, MaxWaitsPerSubject, TransferIdleTimeout,
// MaxFileBytes and MaxRunBytes, and the agent link PingInterval,
// PongTimeout and WriteTimeout, through Manager.Config.
type Config struct {
	// Store keeps jobs, runs and agents. Required.
	Store store.JobStore
	// Blobs holds the output files, under keys "job/agent/file" (see
	// FileKey). Nil: a blob.Dir in ResultsDir.
	Blobs blob.Store
	// ResultsDir is the directory of the output files when Blobs is nil.
	ResultsDir string
	// NodeID names this node (recorded on agents, sent in welcome).
	NodeID string
	// Publisher receives the live logs and agent events; nil drops them.
	Publisher Publisher
	// Bus carries job events (events.go) between the nodes sharing
	// Store, on EventSubject(BusPrefix) (BusPrefix "": cluster's
	// DefaultPrefix). Nil: no other node.
	Bus       cluster.Bus
	BusPrefix string
	// LostGrace is how long a run survives its agent's disconnection.
	LostGrace time.Duration
	// MaxWait caps WAIT (and is what WAIT=-1 means). A blocked WAIT
	// request's connection deadlines move to the end of its wait plus
	// TransferIdleTimeout (the time its answer has to go out), whatever
	// the server's ordinary request timeout.
	MaxWait time.Duration
	// MaxWaitsPerSubject bounds the WAIT requests one subject (the
	// token's sub; admin tokens without one share "") may have blocked at
	// once: more get 429 too_many_waits (default 16).
	MaxWaitsPerSubject int
	// TransferIdleTimeout bounds an upload of an output file, and a
	// download of a result, by progress instead of total time: each read
	// or write that moves bytes moves the connection's deadlines this far
	// ahead, so a transfer fails only when it stalls this long (default
	// 60 s).
	TransferIdleTimeout time.Duration
	// MaxFileBytes and MaxRunBytes bound one uploaded file and one run's
	// files together; uploads in flight count against MaxRunBytes from
	// the moment they are admitted (by their Content-Length), so parallel
	// uploads cannot pass it together.
	MaxFileBytes, MaxRunBytes int64
	// MaxLogBytes bounds the stored log of one run (the result
	// logs/{agent}.txt, runlogs.go): output beyond it is not kept, and a
	// marker line says where it was cut. 0: DefaultMaxLogBytes (4 MiB);
	// negative: no log is stored.
	MaxLogBytes int64
	// DefaultDestruction is the destruction time of a new job, counted
	// from its creation; negative means none.
	DefaultDestruction time.Duration
	// TimerLeaseTTL is how long the lease on the job timers (TimerLease)
	// outlives its holder's last renewal: a node that dies holding it
	// delays the timers by up to this before another node takes over
	// (default 15 s). TimerLeaseRenew is how often the holder renews it
	// and the other nodes ask for it (default a third of TimerLeaseTTL;
	// it must be shorter). NodeID names the holder ("" stands for a
	// random name per Manager).
	TimerLeaseTTL, TimerLeaseRenew time.Duration
	// PingInterval and PongTimeout detect dead agent channels (defaults
	// 20 s and 15 s); WriteTimeout bounds a write to one (10 s).
	PingInterval, PongTimeout, WriteTimeout time.Duration
	// MinScheduleEvery is the shortest period a definition's schedule
	// may have (schedules.go; default DefaultMinScheduleEvery, 1 min).
	MinScheduleEvery time.Duration
	// Logger receives the manager's logs; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Manager runs jobs on agents. Create it with New, call Start, and Stop at
// shutdown. See the package doc for its locks.
type Manager struct {
	cfg   Config         // set by New, never changed
	log   *slog.Logger   // set by New
	st    store.JobStore // set by New
	blobs blob.Store     // set by New

	agents     atomic.Pointer[Agents]           // set by Start; nil: none connected
	runner     atomic.Pointer[DefinitionRunner] // set by SetDefinitionRunner; nil: schedules do not fire
	scheduling atomic.Bool                      // a scan of the schedules is running (lease.go)

	outcomes outcomeCounts // jobs this node ended, by phase (outcomes.go)

	holder       string               // set by New: this manager's name as the timer lease's holder
	eventSubject string               // set by New: EventSubject(BusPrefix)
	events       cluster.Subscription // set by Start: the other nodes' job events; nil without a bus
	leaseCancel  context.CancelFunc   // set by Start: ends the lease loop
	leaseDone    chan struct{}        // set by Start: closed when the lease loop has ended

	mu         sync.Mutex
	leaseHeld  bool                   // guarded by mu; this node holds TimerLease (see lease.go)
	leaseValid time.Time              // guarded by mu; on the monotonic clock: the lease counts as held until then
	watchers   map[string]*Watcher    // job id → its next phase change; guarded by mu
	runGen     map[string]uint64      // job id → count of run changes, for renderings; guarded by mu
	timers     map[string]*time.Timer // "exec:"+job, "destroy:"+job, "lost:"+job+"/"+agent, "dispatch:"+job; guarded by mu; empty unless leaseHeld
	jobLocks   map[string]*jobLock    // the lock of each job in use; guarded by mu
	agentLocks map[string]*jobLock    // the slot lock of each agent in use (slots.go); guarded by mu
	waiting    map[string]int         // blocked WAIT requests per job; guarded by mu
	stopped    bool                   // guarded by mu

	bg sync.WaitGroup // timer callbacks and background work in flight

	logs runLogs // the spools of the runs' logs (runlogs.go)
}

type jobLock struct {
	mu   sync.Mutex
	refs int
}

// New checks cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || (cfg.Blobs == nil && cfg.ResultsDir == "") {
		return nil, errors.New("jobs: Store, and Blobs or ResultsDir, are required")
	}
	if cfg.LostGrace <= 0 {
		cfg.LostGrace = DefaultLostGrace
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxWaitsPerSubject <= 0 {
		cfg.MaxWaitsPerSubject = DefaultMaxWaitsPerSubject
	}
	if cfg.TransferIdleTimeout <= 0 {
		cfg.TransferIdleTimeout = DefaultTransferIdleTimeout
	}
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = DefaultMaxFileBytes
	}
	if cfg.MaxRunBytes <= 0 {
		cfg.MaxRunBytes = DefaultMaxRunBytes
	}
	if cfg.MaxLogBytes == 0 {
		cfg.MaxLogBytes = DefaultMaxLogBytes
	}
	if cfg.DefaultDestruction == 0 {
		cfg.DefaultDestruction = DefaultDestruction
	}
	if cfg.TimerLeaseTTL <= 0 {
		cfg.TimerLeaseTTL = DefaultTimerLeaseTTL
	}
	if cfg.TimerLeaseRenew <= 0 {
		cfg.TimerLeaseRenew = cfg.TimerLeaseTTL / 3
	}
	if cfg.TimerLeaseRenew >= cfg.TimerLeaseTTL {
		return nil, fmt.Errorf("jobs: TimerLeaseRenew (%v) must be shorter than TimerLeaseTTL (%v)", cfg.TimerLeaseRenew, cfg.TimerLeaseTTL)
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 20 * time.Second
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MinScheduleEvery <= 0 {
		cfg.MinScheduleEvery = DefaultMinScheduleEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	blobs := cfg.Blobs
	if blobs == nil {
		d, err := blob.NewDir(cfg.ResultsDir)
		if err != nil {
			return nil, fmt.Errorf("jobs: %w", err)
		}
		blobs = d
	}
	if cfg.BusPrefix == "" {
		cfg.BusPrefix = cluster.DefaultPrefix
	}
	subject := EventSubject(cfg.BusPrefix)
	if err := cluster.ValidSubject(subject); err != nil {
		return nil, fmt.Errorf("jobs: BusPrefix: %w", err)
	}
	holder := cfg.NodeID
	if holder == "" {
		holder = "manager-" + newJobID()
	}
	return &Manager{cfg: cfg, log: cfg.Logger, st: cfg.Store, blobs: blobs, holder: holder, eventSubject: subject,
		watchers: map[string]*Watcher{}, runGen: map[string]uint64{},
		timers: map[string]*time.Timer{}, jobLocks: map[string]*jobLock{}, agentLocks: map[string]*jobLock{},
		waiting: map[string]int{}}, nil
}

// Start recovers from the store what a previous process left, and takes
// part in running the job timers: agents this node held are marked
// disconnected; the timer lease is asked for, and, when this node gets it
// (a node of one always does), every unfinished job is re-armed (see
// loadTimers); a loop keeps renewing the lease, or asking for it, until
// Stop. agents is how the Manager reaches the connected agents from then
// on (nil: none ever connects); no agent may be registered before Start
// returns.
func (m *Manager) Start(ctx context.Context, agents Agents) error {
	if agents != nil {
		m.agents.Store(&agents)
	}
	now := m.cfg.Now()
	if err := m.st.DisconnectAgents(ctx, m.cfg.NodeID, now); err != nil {
		return fmt.Errorf("jobs: start: %w", err)
	}
	// Events first: a change another node makes while this one loads
	// its timers re-arms them after.
	if err := m.subscribe(); err != nil {
		return err
	}
	if err := m.holdLease(ctx); err != nil {
		if m.events != nil {
			m.events.Unsubscribe()
		}
		return fmt.Errorf("jobs: start: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	m.leaseCancel, m.leaseDone = cancel, make(chan struct{})
	go m.leaseLoop(lctx, m.leaseDone)
	m.log.Info("jobs: started", "timer_lease", m.HoldsTimerLease())
	return nil
}

// Stop stops the timers, waits for the background work and releases the
// timer lease (so another node takes the timers over at once), within
// ctx. (The agents' channels are the agent link's to close.)
func (m *Manager) Stop(ctx context.Context) error {
	if m.events != nil {
		m.events.Unsubscribe()
	}
	m.mu.Lock()
	m.stopped = true
	m.dropLeaseLocked()
	m.mu.Unlock()
	if m.leaseCancel != nil {
		m.leaseCancel() // the loop ends even if the wait below gives up
	}
	done := make(chan struct{})
	go func() { m.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("jobs: stop: %w", ctx.Err())
	}
	m.closeLogs()
	return m.stopLease(ctx)
}

// goBackground runs f on a goroutine Stop waits for, unless stopped.
func (m *Manager) goBackground(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.bg.Go(f)
}

// lockJob serialises the transitions of one job; call the returned
// function to unlock.
func (m *Manager) lockJob(id string) func() { return m.lockIn(m.jobLocks, id) }

// lockIn locks the lock of id in locks (a map guarded by m.mu), made when
// first needed and dropped when its last user unlocks; call the returned
// function to unlock.
func (m *Manager) lockIn(locks map[string]*jobLock, id string) func() {
	m.mu.Lock()
	l := locks[id]
	if l == nil {
		l = &jobLock{}
		locks[id] = l
	}
	l.refs++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(locks, id)
		}
		m.mu.Unlock()
	}
}

// bgCtx returns a context for store calls made outside a request.
func bgCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// FileKey is the blob key of a run's output file; RunPrefix covers the
// run's files, and the job id alone all of a job's. The key is also the
// file's store.ResultFile.Path (the same as the relative path of the
// directory layout before the blob store).
func FileKey(jobID, agentID, name string) string { return RunPrefix(jobID, agentID) + "/" + name }

// RunPrefix is the blob key prefix of a run's output files.
func RunPrefix(jobID, agentID string) string { return jobID + "/" + agentID }

// PublishLog publishes output an agent sent for a job it runs on the
// job's log topic, and keeps it for the run's stored log. text is whole
// lines, each ended by '\n' (a jobproto log chunk's output, or the Lines
// of a Log message joined by jobproto.LinesText). Its cost is per chunk:
// the lines become strings only for a topic that has a reader here, in one
// message {"agent","stream","seq","lines"} (seq numbers the first line).
func (m *Manager) PublishLog(jobID, agentID, stream string, text []byte) {
	if len(text) > 0 && text[len(text)-1] != '\n' {
		text = append(text[:len(text):len(text)], '\n') // a last line without its end
	}
	seq, n := m.appendLog(jobID, agentID, stream, text)
	if m.cfg.Publisher == nil || n == 0 {
		return
	}
	topic := LogTopic(jobID)
	if r, ok := m.cfg.Publisher.(interface{ Readers(string) int }); ok && r.Readers(topic) == 0 {
		return // nobody follows the log here: nothing to encode
	}
	// Seq numbers the run's lines from 1 (absent when its log is not
	// kept): a late viewer shows RunLogSoFar, then the lines past it.
	b, _ := json.Marshal(LogChunk{Agent: agentID, Stream: stream, Seq: seq,
		Lines: strings.Split(string(text[:len(text)-1]), "\n")})
	m.cfg.Publisher.Publish(topic, relay.Message{Type: relay.Text, Data: b})
}

// LogChunk is a message of a job's log topic: lines of one run's output,
// in order; Seq numbers the first (the run's lines count from 1, as in its
// stored log), 0 (absent) when the run's log is not kept.
type LogChunk struct {
	Agent  string   `json:"agent"`
	Stream string   `json:"stream"`
	Seq    int64    `json:"seq,omitempty"`
	Lines  []string `json:"lines"`
}
