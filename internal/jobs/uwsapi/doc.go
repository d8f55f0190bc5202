// Package uwsapi is the REST binding of jobs (docs/jobs.md): the IVOA UWS
// 1.1 job resources under /api/v1/jobs and the agent list under
// /api/v1/agents, their XML, JSON and CSV representations, blocking WAIT
// requests, and the upload and download of output files.
//
// The state machine is jobs.Manager's: every change a request asks for is
// one of its methods, and WAIT blocks on its watchers. This package adds
// what belongs to HTTP: authorization by token scope and job owner,
// parameters and their errors (JSON {"error":…} via apierr), the limit of
// WAIT requests per subject, one shared rendering for the requests a phase
// change wakes, the connection deadlines of long requests
// (deadlines.go), and the atomic reservation of a run's file bytes while
// uploads are in flight. Output files go to and come from the Manager's
// blob.Store.
//
// Locks: API.mu guards waitsBy and rendered; API.uploadMu guards reserved
// and is held across the listing of a run's stored files, so that the
// check and the reservation of an upload are one step. Neither is held
// while calling the Manager or writing a response, and neither is taken
// under the other.
package uwsapi
