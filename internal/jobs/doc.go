// Package jobs is the hub side of jobs (docs/jobs.md): the registry of
// connected host agents and their control channels, the IVOA UWS 1.1 job
// state machine, dispatch of runs to agents, collection of their results
// and output files, and the REST API under /api/v1/jobs and
// /api/v1/agents.
//
// Jobs, runs and agents persist in a store.JobStore; output files in a
// blob.Store (a directory today). Nothing the agents report is acknowledged before it is
// stored, and a restarted hub re-arms every unfinished job from the store.
package jobs
