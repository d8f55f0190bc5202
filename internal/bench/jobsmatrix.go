package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The matrix variant of the jobs scenario (JobsOptions.Matrix, docs/jobs.md
// "Matrix parameters"): each job is one matrix job whose SERVER parameter
// has Matrix values, so every agent runs Matrix runs (one at a time: the
// bench action declares no max_concurrent). A job is timed from the RUN
// POST until a blocking GET has returned COMPLETED and the matrix result
// (matrix.csv of bytes_read.server-a) has been read and every cell and
// total checked.

// JobsTargetMatrixJobSec bounds RUN → COMPLETED with the matrix result
// read, for a 50-agent × 10-value matrix (issue 19).
const JobsTargetMatrixJobSec = 5.0

// jobTargetSec is the RUN → COMPLETED target of r's jobs.
func (r *JobsResult) jobTargetSec() float64 {
	if r.Matrix > 1 {
		return JobsTargetMatrixJobSec
	}
	return JobsTargetJobSec
}

// jobsServer names the i-th server of a matrix job.
func jobsServer(i int) string { return fmt.Sprintf("data-%d.example.org", i) }

// runMatrixJob creates matrix job number k, times it from RUN to the
// matrix result and waits for every run's ack.
func (b *jobsBench) runMatrixJob(ctx context.Context, k int, events <-chan agentEvent) (JobRun, error) {
	var jr JobRun
	ctx, cancel := context.WithTimeout(ctx, b.o.JobTimeout)
	defer cancel()
	servers := make([]string, b.o.Matrix)
	for i := range servers {
		servers[i] = jobsServer(i)
	}
	status, body, h, err := b.doH(ctx, http.MethodPost, "/api/v1/jobs", url.Values{
		"ACTION": {jobsAction}, "TARGETS": {b.label}, "SERVER": servers, "RUNID": {fmt.Sprintf("bench-jobs-matrix-%d", k)}})
	if err != nil {
		return jr, err
	}
	_, id, ok := strings.Cut(h.Get("Location"), "/api/v1/jobs/")
	if status != http.StatusSeeOther || !ok || id == "" {
		return jr, fmt.Errorf("bench: create matrix job: HTTP %d %s: %s", status, h.Get("Location"), bytes.TrimSpace(body))
	}
	b.created = append(b.created, id)
	jr.ID = id
	serverCPU := startCPUSpan(b.o.ServerPID)

	// The runs' acks are taken while the job runs: an agent reports each
	// before it reads its next run, and events holds one per agent.
	acked := make(chan error, 1)
	go func() { acked <- b.awaitAcks(ctx, id, events) }()

	doc, t0, err := b.runToEnd(ctx, id, "matrix job", &jr)
	if err != nil {
		return jr, err
	}
	cells, err := b.checkMatrix(ctx, id, servers)
	if err != nil {
		return jr, err
	}
	jr.Sec = time.Since(t0).Seconds()
	jr.ServerCPUSec = serverCPU.seconds()
	jr.SummaryRows, jr.Results = cells, len(doc.Results)

	// Every run's ack, before the next job.
	return jr, <-acked
}

// awaitAcks takes the acks of every run of matrix job id from events.
func (b *jobsBench) awaitAcks(ctx context.Context, id string, events <-chan agentEvent) error {
	for n := 0; n < b.o.Agents*b.o.Matrix; n++ {
		select {
		case ev := <-events:
			if ev.err != nil {
				return fmt.Errorf("bench: matrix job %s: %w", id, ev.err)
			}
			if !strings.HasPrefix(ev.job, id+"-") {
				return fmt.Errorf("bench: matrix job %s: an agent acked job %s", id, ev.job)
			}
		case <-ctx.Done():
			return fmt.Errorf("bench: matrix job %s: %d of %d runs acked: %w", id, n, b.o.Agents*b.o.Matrix, ctx.Err())
		}
	}
	return nil
}

// checkMatrix reads the matrix result of bytes_read.server-a and checks
// the header, every agent's row (each cell the agent's metric), the row
// and column totals; it returns the cells read.
func (b *jobsBench) checkMatrix(ctx context.Context, id string, servers []string) (int, error) {
	status, body, err := b.do(ctx, http.MethodGet, "/api/v1/jobs/"+id+"/results/matrix.csv?metric=bytes_read.server-a", nil)
	if err != nil {
		return 0, err
	}
	rows, cerr := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if status != http.StatusOK || cerr != nil || len(rows) != b.o.Agents+2 {
		return 0, fmt.Errorf("bench: matrix job %s: matrix.csv: HTTP %d (%v), %d rows: %.200q", id, status, cerr, len(rows), body)
	}
	want := append(append([]string{"agent"}, servers...), "total")
	if strings.Join(rows[0], ",") != strings.Join(want, ",") {
		return 0, fmt.Errorf("bench: matrix job %s: matrix.csv header %q", id, rows[0])
	}
	var all int64
	for i := range b.o.Agents {
		m := strconv.FormatInt(jobsMetric(i), 10)
		row := rows[i+1] // agents sort by id: bench-jobs-000, 001, …
		if row[0] != jobsAgentID(i) || row[len(row)-1] != strconv.FormatInt(jobsMetric(i)*int64(len(servers)), 10) {
			return 0, fmt.Errorf("bench: matrix job %s: matrix.csv row %q", id, row)
		}
		for _, c := range row[1 : len(row)-1] {
			if c != m {
				return 0, fmt.Errorf("bench: matrix job %s: matrix.csv row %q, want every cell %s", id, row, m)
			}
		}
		all += jobsMetric(i)
	}
	totals := rows[len(rows)-1]
	for _, c := range totals[1 : len(totals)-1] {
		if c != strconv.FormatInt(all, 10) {
			return 0, fmt.Errorf("bench: matrix job %s: matrix.csv totals %q, want %d per column", id, totals, all)
		}
	}
	return b.o.Agents * len(servers), nil
}
