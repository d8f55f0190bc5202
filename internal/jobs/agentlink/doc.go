// Package agentlink is the hub side of the agent control channel
// (docs/jobs.md, "Agent control channel"): the connection type "agent"
// (pkg/wire PrefixAgent) as an access endpoint, and the channels it
// admits.
//
// Endpoint decides what an agent's token allows (Authorize) and hands each
// admitted channel to a Link (Serve → Link.AcceptAgent). What every
// connection type shares — token verification, revocation checks at the
// access request and the code exchange, one-time codes, connection limits,
// Origin — is access's. The Link checks revocations again when it admits a
// channel and at the agent's hello, under the lock its CloseWhere takes
// (LinkConfig.Denier), so a revocation cannot slip between.
//
// A Link serves each channel: the hello (checked against the token: agent
// id, labels), a watchdog (token expiry, pings), and the agent's messages,
// in order, which it reports to the jobs.Manager (started, log lines,
// results — each acknowledged after it is stored). It implements
// jobs.Agents, through which the Manager sends runs and aborts.
//
// Sending contract: nothing writes to an agent's socket while a lock that
// other work needs is held. Every message to an agent goes through its
// channel's send queue, bounded in bytes (LinkConfig.SendQueueBytes); a
// send appends and returns at once, and one writer goroutine per channel
// writes whatever is queued as one batch, under WriteTimeout. A send that
// finds the queue full does not wait: it fails with ErrSendQueueFull
// (counted, SendQueueOverflows) and closes the channel with
// CloseSlowConsumer; the agent's runs are sent again when it reconnects.
// So a stalled agent delays nothing but its own channel: not the job
// transitions that send it a run or an abort, not the other agents of
// the job.
//
// With a bus (LinkConfig.Bus, cluster.go) the Link is one of a cluster's:
// each node announces the agents it holds and keeps a directory of the
// others', so Connected and Status cover every node's agents; a run or an
// abort for an agent held elsewhere is published to the node holding it,
// which queues it on the agent's channel. The Manager hears of the other
// nodes' agents coming and going (RemoteAgentUp, RemoteAgentGone).
//
// Locks: Link.mu guards the channel sets (agents, links) and stopped;
// session.mu guards one channel's queue, close request and job sets.
// linkBus.pubMu orders the presence announcements (and guards the agents'
// command subscriptions); linkBus.dirMu guards the directory of the other
// nodes' agents. Order: pubMu, then Link.mu, then session.mu; dirMu is
// taken alone. Neither is held while calling the
// Manager or the connection; the Denier, an in-memory lookup, is called
// under Link.mu. The Manager calls the jobs.Agents methods with a job's
// lock held (so: a job's lock, then Link.mu, then session.mu): they take
// these locks briefly and queue.
package agentlink
