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
// today), under keys FileKey(job, agent, file).
//
// Timers (execution deadline, destruction, lost grace period of each run,
// dispatch retry) are this process's: time.AfterFunc timers in
// Manager.timers, re-armed from the store by Start. A cluster will need
// them behind a lease in the store, so that one node runs each job's.
//
// Locks:
//   - A job's lock (lockJob) serialises the transitions of that job: the
//     read-modify-write of the job and its runs in the store, and the
//     timers, wake-ups and sends that follow from it. Store calls are made
//     under it; sends to agents (Agents) only queue. It is never held
//     while waiting on another job's lock.
//   - Manager.mu guards the maps of watchers, run versions, timers, job
//     locks and WAIT counts, and stopped. It is held only for map
//     operations: never across a store call, a send, a Publisher call or a
//     job's lock.
//
// Order: a job's lock, then Manager.mu (lockJob takes Manager.mu to find
// the job's lock and releases it before locking that); a job's lock, then
// the Agents' own locks (agentlink: Link.mu, then a channel's mu). No
// lock is held while calling the Publisher.
package jobs
