// Package jobs is the hub's job state machine (docs/jobs.md): IVOA UWS 1.1
// phases over a store.JobStore, dispatch of runs to host agents,
// collection of their results and output files, the timers of each job,
// and the wake-ups of requests waiting for a job's next phase.
//
// Three rooms make up jobs on a node:
//   - jobs (this package): the Manager. Every change of a job is one of
//     its methods (Create, Run, Abort, Remove, SetDestruction,
//     SetExecutionDuration, and what agents report: RunStarted,
//     TakeResult, AgentConnected, …) and runs under that job's lock.
//   - internal/jobs/agentlink: the agents' control channels. It implements
//     Agents, through which the Manager sends runs and aborts; a send
//     queues and returns, so no agent's socket is written while a job's
//     lock is held.
//   - internal/jobs/uwsapi: the REST/UWS binding, which drives the Manager
//     and renders what it returns.
//
// The store is the truth: nothing the agents report is acknowledged
// before it is stored, and a restarted hub re-arms every unfinished job
// from the store (Start). Output files live in a blob.Store (a directory
// today), under keys FileKey(job, agent, file); each run's log under
// LogKey(job, agent), spooled on the node that receives its lines until
// its result (runlogs.go).
//
// Timers (execution deadline, destruction, lost grace period of each run,
// dispatch retry) are time.AfterFunc timers in Manager.timers, run by one
// node of those sharing the store: the holder of the store lease
// TimerLease (lease.go). A node of one takes it at Start; gaining it
// loads every unfinished job's timers from the store, losing it stops
// them, Stop releases it.
//
// Nodes sharing the store tell each other about a job's changes with
// events on the cluster bus (Config.Bus, events.go): every change is
// announced, published and applied through the one function that also
// applies the other nodes' events, so WAIT requests on any node wake at a
// phase change (checking a foreign event against the store) and the
// timer lease's holder re-arms the timers of jobs changed elsewhere.
//
// Locks:
//   - A job's lock (lockJob) serialises the transitions of that job: the
//     read-modify-write of the job and its runs in the store, and the
//     timers, wake-ups and sends that follow from it. Store calls are made
//     under it; sends to agents (Agents) only queue. It is never held
//     while waiting on another job's lock.
//   - Manager.mu guards the maps of watchers, run versions, timers, job
//     locks and WAIT counts, stopped, and the state of the timer lease
//     (leaseHeld, leaseValid). It is held only for map operations and
//     those fields: never across a store call (the lease's included), a
//     send, a Publisher call or a job's lock.
//   - The lease loop (leaseLoop, one goroutine from Start to Stop) is the
//     only caller of AcquireLease after Start; it takes no lock while it
//     waits for the store, and loads the timers with no lock held.
//   - The bus calls receive on its own goroutine with no lock held;
//     receive takes Manager.mu only (to wake watchers), and re-arms timers
//     on a background goroutine under the job's lock.
//   - An agent's slot lock (lockAgent, slots.go) serialises the decisions
//     which of the agent's queued runs to send (pump): it is taken before
//     the locks of the jobs whose runs it sends, never while holding one.
//     It also orders the store record of the agent's connections
//     (AgentConnected, AgentDisconnected) with ForgetAgent, which hold it
//     across store calls and take no other lock under it.
//
// Order: an agent's slot lock, then a job's lock; a job's lock, then
// Manager.mu (lockJob takes Manager.mu to find the job's lock and
// releases it before locking that); a job's lock, then the Agents' own
// locks (agentlink: Link.mu, then a channel's mu). No
// lock is held while calling the Publisher. Job events are published
// under a job's lock (never under Manager.mu): Bus.Publish does not wait
// for other nodes.
package jobs
