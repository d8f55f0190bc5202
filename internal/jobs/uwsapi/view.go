package uwsapi

import (
	"strings"

	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// jobView is what the API shows of one job: the job, its runs, and where
// it lives.
type jobView struct {
	Job  store.Job
	Runs []store.Run
	// Logs are the runs' stored logs (jobs.LogKey), sorted by key.
	Logs []blob.Info
	// Base is the absolute URL of the job list, without a trailing slash
	// ("https://hub.example.org/api/v1/jobs"); hrefs are built from it.
	Base string
	// Matrix is set on a matrix job: Runs are then its children's, and
	// Matrix says which combination each belongs to.
	Matrix *matrixView
	// Steps is set on a test of several steps (with Matrix: its
	// combinations are the steps' jobs, steps.go).
	Steps *stepsView
}

// href returns the absolute URL of the job.
func (v *jobView) href() string { return v.Base + "/" + v.Job.ID }

// resultRef is one entry of a job's result list.
type resultRef struct {
	ID       string // "summary", "matrix.json", "matrix.csv", "logs/{agent}.txt" or "{agent}/{file}"
	MimeType string
	Size     int64 // -1: unknown (the summary is generated on request)
	// File is the stored file of an uploaded result; nil for the summary.
	File *store.ResultFile
}

// SummaryResult is the id of the generated CSV result.
const SummaryResult = "summary"

// LogResultPrefix starts the id of a run's stored log: logs/{agent}.txt.
const LogResultPrefix = "logs/"

// results lists the results of a job: the summary once any run has
// finished, then every uploaded file, by agent then name, then each run's
// stored log, logs/{agent}.txt. An ARCHIVED job has none.
//
// An agent named "logs" could upload a file "{agent}.txt" whose id is that
// of another run's log: the log is listed, the file is not.
func (v *jobView) results() []resultRef {
	if v.Job.Phase == store.PhaseArchived {
		return nil
	}
	var out, logs []resultRef
	logIDs := map[string]bool{}
	for _, l := range v.Logs {
		agent, ok := jobs.LogAgent(v.Job.ID, l.Key)
		if !ok {
			continue
		}
		id := LogResultPrefix + agent + ".txt"
		logIDs[id] = true
		logs = append(logs, resultRef{ID: id, MimeType: "text/plain", Size: l.Size,
			File: &store.ResultFile{Name: agent + ".txt", Path: l.Key, Size: l.Size}})
	}
	finished := false
	for _, r := range v.Runs {
		if r.State.Final() {
			finished = true
			break
		}
	}
	if finished {
		out = append(out, resultRef{ID: SummaryResult, MimeType: "text/csv", Size: -1})
	}
	if v.Matrix != nil {
		// The files and logs of its runs are its children's results.
		if finished {
			out = append(out, resultRef{ID: MatrixJSONResult, MimeType: "application/json", Size: -1},
				resultRef{ID: MatrixCSVResult, MimeType: "text/csv", Size: -1})
		}
		return out
	}
	for i := range v.Runs {
		r := &v.Runs[i]
		for j := range r.Files {
			f := &r.Files[j]
			if id := r.AgentID + "/" + f.Name; !logIDs[id] {
				out = append(out, resultRef{ID: id, MimeType: mimeType(f.Name), Size: f.Size, File: f})
			}
		}
	}
	return append(out, logs...)
}

// mimeType guesses a result file's media type from its extension.
func mimeType(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "application/octet-stream"
	}
	switch strings.ToLower(name[i+1:]) {
	case "csv":
		return "text/csv"
	case "json":
		return "application/json"
	case "txt", "log":
		return "text/plain"
	case "xml":
		return "application/xml"
	case "html":
		return "text/html"
	case "png":
		return "image/png"
	case "jpg", "jpeg":
		return "image/jpeg"
	case "fits":
		return "application/fits"
	case "gz":
		return "application/gzip"
	}
	return "application/octet-stream"
}
