// Package jobs is the hub side of jobs (docs/jobs.md): the IVOA UWS 1.1
// job state machine, the registry of connected host agents and their
// control channels, dispatch of runs to agents, and collection of their
// results and output files. The REST binding (/api/v1/jobs,
// /api/v1/agents) is internal/jobs/uwsapi, which drives the Manager
// through its exported methods.
//
// Jobs, runs and agents persist in a store.JobStore; output files in a
// blob.Store (a directory today). Nothing the agents report is
// acknowledged before it is stored, and a restarted hub re-arms every
// unfinished job from the store.
package jobs
