package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"switchboard/internal/apierr"
	"switchboard/internal/auth"
	"switchboard/internal/blob"
	"switchboard/internal/jobproto"
	"switchboard/internal/store"
)

// Register adds the jobs and agents API to mux. base is the public URL of
// the server ("https://hub.example.org"), used in Location headers and
// hrefs.
func (m *Manager) Register(mux *http.ServeMux, base string) {
	m.base = strings.TrimSuffix(base, "/") + "/api/v1/jobs"
	mux.HandleFunc("GET /api/v1/agents", m.serveAgents)
	mux.HandleFunc("GET /api/v1/jobs", m.serveList)
	mux.HandleFunc("POST /api/v1/jobs", m.serveCreate)
	mux.HandleFunc("GET /api/v1/jobs/{id}", m.serveJob)
	mux.HandleFunc("POST /api/v1/jobs/{id}", m.servePostJob)
	mux.HandleFunc("DELETE /api/v1/jobs/{id}", m.serveDelete)
	mux.HandleFunc("GET /api/v1/jobs/{id}/{sub}", m.serveSub)
	mux.HandleFunc("POST /api/v1/jobs/{id}/{sub}", m.servePostSub)
	mux.HandleFunc("GET /api/v1/jobs/{id}/parameters/{name}", m.serveParameter)
	mux.HandleFunc("GET /api/v1/jobs/{id}/results/{result...}", m.serveResult)
	mux.HandleFunc("PUT /api/v1/jobs/{id}/runs/{agent}/files/{name}", m.serveUpload)
}

// caller is an authenticated API user.
type caller struct {
	claims *auth.Claims
	admin  bool
}

// authorize checks the token and that it may read (write false) or write.
func (m *Manager) authorize(w http.ResponseWriter, r *http.Request, write bool) (*caller, bool) {
	if m.cfg.Authenticate == nil {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "unavailable", "the jobs API is not configured")
		return nil, false
	}
	c, e := m.cfg.Authenticate(r)
	if e != nil {
		apierr.Write(w, e)
		return nil, false
	}
	cl := &caller{claims: c, admin: c.Allows(auth.ScopeJobsAdmin)}
	switch {
	case cl.admin:
	case write && !c.HasScope(auth.ScopeJobsWrite):
		apierr.WriteNew(w, http.StatusForbidden, "scope_forbidden", "this needs scope jobs:write")
		return nil, false
	case !write && !c.HasScope(auth.ScopeJobsRead) && !c.HasScope(auth.ScopeJobsWrite):
		apierr.WriteNew(w, http.StatusForbidden, "scope_forbidden", "this needs scope jobs:read")
		return nil, false
	case c.Subject == "":
		apierr.WriteNew(w, http.StatusForbidden, "subject_missing", "the token has no sub claim: jobs belong to a subject")
		return nil, false
	}
	return cl, true
}

// loadJob reads the job named in the path and checks the caller may see
// it: 404 when absent, 403 when another owner's.
func (m *Manager) loadJob(w http.ResponseWriter, r *http.Request, c *caller) (store.Job, bool) {
	id := r.PathValue("id")
	j, err := m.st.Job(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		apierr.WriteNew(w, http.StatusNotFound, "job_not_found", "no job "+truncate(id, 64))
		return j, false
	}
	if err != nil {
		m.storeError(w, r, "read job", err)
		return j, false
	}
	if !c.admin && j.Owner != c.claims.Subject {
		apierr.WriteNew(w, http.StatusForbidden, "job_forbidden", "this job belongs to another owner")
		return j, false
	}
	return j, true
}

// storeError answers a failed store call with 503, never a 500.
func (m *Manager) storeError(w http.ResponseWriter, r *http.Request, op string, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return
	}
	m.log.Error("jobs: store failed", "op", op, "err", err)
	apierr.WriteNew(w, http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable; nothing was changed, retry later")
}

// answerError maps an error of a state change to its status.
func (m *Manager) answerError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *errPhase
	var te *targetError
	var qe *paramError
	switch {
	case errors.As(err, &pe):
		apierr.WriteNew(w, http.StatusForbidden, "phase_forbidden", pe.msg)
	case errors.As(err, &te):
		apierr.WriteNew(w, http.StatusBadRequest, te.code, te.msg)
	case errors.Is(err, errBodyTooLarge):
		apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is above 1 MiB")
	case errors.As(err, &qe):
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", qe.Error())
	case errors.Is(err, store.ErrNotFound):
		apierr.WriteNew(w, http.StatusNotFound, "job_not_found", "no such job")
	default:
		m.storeError(w, r, "update job", err)
	}
}

func (m *Manager) seeOther(w http.ResponseWriter, id string) {
	loc := m.base
	if id != "" {
		loc += "/" + id
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusSeeOther)
}

// view loads the runs of j for rendering.
func (m *Manager) view(ctx context.Context, j store.Job) (*jobView, error) {
	runs, err := m.st.Runs(ctx, j.ID)
	if err != nil {
		return nil, err
	}
	return &jobView{Job: j, Runs: runs, Base: m.base}, nil
}

func (m *Manager) serveList(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, false)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		m.answerError(w, r, err)
		return
	}
	f := store.JobFilter{Limit: 10000}
	if !c.admin {
		f.Owner = c.claims.Subject
	}
	if f.Phases, err = parsePhases(q["phase"]); err != nil {
		m.answerError(w, r, err)
		return
	}
	if v, ok := one(w, q, "after"); !ok {
		return
	} else if v != "" {
		if f.After, err = parseAfter(v); err != nil {
			m.answerError(w, r, err)
			return
		}
	}
	if v, ok := one(w, q, "last"); !ok {
		return
	} else if v != "" {
		if f.Last, err = parseLast(v); err != nil {
			m.answerError(w, r, err)
			return
		}
	}
	jobs, err := m.st.Jobs(r.Context(), f)
	if err != nil {
		m.storeError(w, r, "list jobs", err)
		return
	}
	writeJobList(w, wantsXML(r), jobs, m.base)
}

// one returns the single value of a request parameter ("" if absent); a
// repeated one is answered with 400.
func one(w http.ResponseWriter, q map[string][]string, name string) (string, bool) {
	switch vs := q[name]; len(vs) {
	case 0:
		return "", true
	case 1:
		return vs[0], true
	}
	apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", strings.ToUpper(name)+" is given more than once")
	return "", false
}

// createRequest is the JSON form of a job creation.
type createRequest struct {
	Action            string            `json:"action"`
	Targets           string            `json:"targets"`
	Parameters        map[string]string `json:"parameters"`
	RunID             string            `json:"runId"`
	Phase             string            `json:"phase"`
	ExecutionDuration *int64            `json:"executionDuration"`
	Destruction       string            `json:"destruction"`
}

const maxJSONBody = 1 << 20

func (m *Manager) serveCreate(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, true)
	if !ok {
		return
	}
	req, ok := m.readCreate(w, r)
	if !ok {
		return
	}
	now := m.cfg.Now()
	j := store.Job{ID: newJobID(), RunID: req.RunID, Owner: c.claims.Subject, Action: req.Action,
		Targets: strings.TrimSpace(req.Targets), Phase: store.PhasePending, CreatedAt: now}
	if c.claims.Subject == "" {
		j.Owner = "admin"
	}
	if len(j.RunID) > 256 || !utf8.ValidString(j.RunID) || strings.ContainsRune(j.RunID, 0) {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "RUNID must be at most 256 bytes of UTF-8 text without NUL")
		return
	}
	if m.cfg.DefaultDestruction > 0 {
		j.Destruction = now.Add(m.cfg.DefaultDestruction)
	}
	var err error
	if req.Destruction != "" {
		if j.Destruction, err = parseDestruction(req.Destruction, now); err != nil {
			m.answerError(w, r, err)
			return
		}
	}
	if req.ExecutionDuration != nil {
		if j.ExecDuration, err = parseExecutionDuration(strconv.FormatInt(*req.ExecutionDuration, 10)); err != nil {
			m.answerError(w, r, err)
			return
		}
	}
	runNow := false
	switch strings.ToUpper(req.Phase) {
	case "":
	case "RUN":
		runNow = true
	default:
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "PHASE at creation must be RUN (or absent)")
		return
	}
	agents, err := m.st.Agents(r.Context())
	if err != nil {
		m.storeError(w, r, "list agents", err)
		return
	}
	if j.Params, err = resolveAction(agents, j.Targets, j.Action, req.Parameters); err != nil {
		m.answerError(w, r, err)
		return
	}
	if err := m.st.CreateJob(r.Context(), j); err != nil {
		m.storeError(w, r, "create job", err)
		return
	}
	m.armDestruction(j)
	m.log.Info("jobs: job created", "job", j.ID, "action", j.Action, "targets", j.Targets, "owner", j.Owner)
	if runNow {
		if _, err := m.run(r.Context(), j.ID); err != nil {
			m.answerError(w, r, err)
			return
		}
	}
	m.seeOther(w, j.ID)
}

// readCreate reads a creation request, form-encoded or JSON.
func (m *Manager) readCreate(w http.ResponseWriter, r *http.Request) (createRequest, bool) {
	var req createRequest
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
		if err != nil {
			apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is above 1 MiB")
			return req, false
		}
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_json", "the body is not a job: "+err.Error())
			return req, false
		}
		return req, true
	}
	q, err := formParams(r)
	if err != nil {
		m.answerError(w, r, err)
		return req, false
	}
	req.Parameters = map[string]string{}
	for k, vs := range q {
		if len(vs) != 1 {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", strings.ToUpper(k)+" is given more than once")
			return req, false
		}
		v := vs[0]
		switch k {
		case "action":
			req.Action = v
		case "targets":
			req.Targets = v
		case "runid":
			req.RunID = v
		case "phase":
			req.Phase = v
		case "destruction":
			req.Destruction = v
		case "executionduration":
			d, err := parseExecutionDuration(v)
			if err != nil {
				m.answerError(w, r, err)
				return req, false
			}
			n := int64(d / time.Second)
			req.ExecutionDuration = &n
		case "quote", "owner", "wait", "after", "last":
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", strings.ToUpper(k)+" cannot be set at creation")
			return req, false
		default:
			req.Parameters[k] = v
		}
	}
	return req, true
}

// activePhase reports whether WAIT blocks in phase p.
func activePhase(p store.Phase) bool {
	switch p {
	case store.PhasePending, store.PhaseQueued, store.PhaseExecuting, store.PhaseHeld, store.PhaseSuspended:
		return true
	}
	return false
}

func (m *Manager) serveJob(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, false)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		m.answerError(w, r, err)
		return
	}
	var wait time.Duration
	if v, ok := one(w, q, "wait"); !ok {
		return
	} else if v != "" {
		if wait, err = parseWait(v, m.cfg.MaxWait); err != nil {
			m.answerError(w, r, err)
			return
		}
	}
	var inPhase store.Phase
	if v, ok := one(w, q, "phase"); !ok {
		return
	} else if v != "" {
		ps, err := parsePhases([]string{v})
		if err != nil {
			m.answerError(w, r, err)
			return
		}
		inPhase = ps[0]
	}
	id := r.PathValue("id")
	var w0 *watcher
	if wait > 0 {
		w0 = m.watch(id) // before reading: no change can slip between
	}
	j, ok := m.loadJob(w, r, c)
	if !ok {
		if w0 != nil {
			m.unwatch(id, w0)
		}
		return
	}
	if w0 != nil && !(activePhase(j.Phase) && (inPhase == "" || j.Phase == inPhase)) {
		m.unwatch(id, w0)
	}
	if wait > 0 && activePhase(j.Phase) && (inPhase == "" || j.Phase == inPhase) {
		release, admitted := m.admitWait(c.claims.Subject)
		if !admitted {
			m.unwatch(id, w0)
			w.Header().Set("Retry-After", "1")
			apierr.WriteNew(w, http.StatusTooManyRequests, "too_many_waits", fmt.Sprintf(
				"this subject already has %d WAIT requests blocked; retry when one has answered", m.cfg.MaxWaitsPerSubject))
			return
		}
		// The wait may outlast the server's ordinary request timeout: the
		// connection stays open to its end, and the answer then has the
		// transfer idle time to go out.
		extendDeadlines(w, time.Now().Add(wait+m.cfg.TransferIdleTimeout))
		woken, ok := m.waitPhase(r, j, w0, wait)
		release()
		if !ok {
			return // the client went away
		}
		if woken != nil {
			// Every request blocked on this job wakes at once: they share
			// one rendering of the new state.
			m.writeRendering(w, *woken, wantsXML(r))
			return
		}
		if j, ok = m.loadJob(w, r, c); !ok { // the wait ended (or the job went): read it again
			return
		}
	}
	v, err := m.view(r.Context(), j)
	if err != nil {
		m.storeError(w, r, "read runs", err)
		return
	}
	writeJob(w, wantsXML(r), v)
}

// waitPhase blocks until the job leaves phase j.Phase, the wait ends or
// the client goes (ok false). It returns the job's new state when a phase
// change brought it, else nil (the caller reads the job again). It
// releases w (and the watchers it takes after it).
func (m *Manager) waitPhase(r *http.Request, j store.Job, w *watcher, wait time.Duration) (woken *store.Job, ok bool) {
	defer func() { m.unwatch(j.ID, w) }()
	t := time.NewTimer(wait)
	defer t.Stop()
	m.addWaiting(j.ID, 1)
	defer m.addWaiting(j.ID, -1)
	for {
		select {
		case <-w.done:
		case <-t.C:
			return nil, true
		case <-r.Context().Done():
			return nil, false
		}
		if !w.known {
			return nil, true
		}
		if w.job.Phase != j.Phase {
			return &w.job, true
		}
		m.unwatch(j.ID, w)
		w = m.watch(j.ID)
	}
}

// rendering is a job document rendered once for all the WAIT requests a
// phase change wakes.
type rendering struct {
	updated time.Time
	gen     uint64
	once    sync.Once
	rec     *recorder
	err     error
}

// maxRenderings bounds the cache of renderings.
const maxRenderings = 1024

// writeRendering writes j's document, rendering it at most once per job
// version, run changes and format.
func (m *Manager) writeRendering(w http.ResponseWriter, j store.Job, asXML bool) {
	key := j.ID + "|json"
	if asXML {
		key = j.ID + "|xml"
	}
	m.mu.Lock()
	gen := m.runGen[j.ID]
	rd := m.rendered[key]
	if rd == nil || !rd.updated.Equal(j.UpdatedAt) || rd.gen != gen {
		if len(m.rendered) >= maxRenderings {
			clear(m.rendered)
		}
		rd = &rendering{updated: j.UpdatedAt, gen: gen}
		m.rendered[key] = rd
	}
	m.mu.Unlock()
	rd.once.Do(func() {
		ctx, cancel := bgCtx()
		defer cancel()
		v, err := m.view(ctx, j)
		if err != nil {
			rd.err = err
			return
		}
		rd.rec = newRecorder()
		writeJob(rd.rec, asXML, v)
	})
	if rd.err != nil {
		m.log.Error("jobs: store failed", "op", "read runs", "err", rd.err)
		apierr.WriteNew(w, http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable; retry later")
		return
	}
	rd.rec.replay(w)
}

// recorder keeps a response to replay it.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

func (r *recorder) replay(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	w.Write(r.body.Bytes())
}

func (m *Manager) servePostJob(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, true)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		m.answerError(w, r, err)
		return
	}
	j, ok := m.loadJob(w, r, c)
	if !ok {
		return
	}
	for k := range q {
		switch k {
		case "action", "phase", "destruction", "executionduration":
		default:
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", strings.ToUpper(k)+" cannot be changed here (ACTION=DELETE, PHASE, DESTRUCTION, EXECUTIONDURATION)")
			return
		}
	}
	if v, ok := one(w, q, "action"); !ok {
		return
	} else if v != "" {
		if !strings.EqualFold(v, "DELETE") {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "ACTION must be DELETE")
			return
		}
		if err := m.remove(r.Context(), j.ID); err != nil {
			m.answerError(w, r, err)
			return
		}
		m.seeOther(w, "")
		return
	}
	if len(q) == 0 {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "nothing to change: give PHASE, DESTRUCTION, EXECUTIONDURATION or ACTION=DELETE")
		return
	}
	for _, name := range []string{"destruction", "executionduration", "phase"} {
		v, ok := one(w, q, name)
		if !ok {
			return
		}
		if _, given := q[name]; !given {
			continue
		}
		if err := m.change(r.Context(), j.ID, name, v); err != nil {
			m.answerError(w, r, err)
			return
		}
	}
	m.seeOther(w, j.ID)
}

// change applies one UWS state change.
func (m *Manager) change(ctx context.Context, id, name, v string) error {
	switch name {
	case "phase":
		switch strings.ToUpper(v) {
		case "RUN":
			_, err := m.run(ctx, id)
			return err
		case "ABORT":
			_, err := m.abort(id, "")
			return err
		}
		return &paramError{Param: "PHASE", Message: "must be RUN or ABORT"}
	case "destruction":
		t, err := parseDestruction(v, m.cfg.Now())
		if err != nil {
			return err
		}
		unlock := m.lockJob(id)
		j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
			if j.Phase == store.PhaseArchived {
				return &errPhase{"an ARCHIVED job has no destruction time left to change"}
			}
			j.Destruction = t
			return nil
		})
		unlock()
		if err != nil {
			return err
		}
		m.armDestruction(j)
	case "executionduration":
		d, err := parseExecutionDuration(v)
		if err != nil {
			return err
		}
		unlock := m.lockJob(id)
		j, err := m.st.UpdateJob(ctx, id, func(j *store.Job) error {
			if j.Phase.Final() {
				return &errPhase{fmt.Sprintf("a job in phase %s cannot change its execution duration", j.Phase)}
			}
			j.ExecDuration = d
			return nil
		})
		unlock()
		if err != nil {
			return err
		}
		if j.Phase == store.PhaseExecuting {
			m.armExecDeadline(j)
		}
	}
	return nil
}

func (m *Manager) serveDelete(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, true)
	if !ok {
		return
	}
	j, ok := m.loadJob(w, r, c)
	if !ok {
		return
	}
	if err := m.remove(r.Context(), j.ID); err != nil {
		m.answerError(w, r, err)
		return
	}
	m.seeOther(w, "")
}

func writeText(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	io.WriteString(w, s)
}

func isoTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func (m *Manager) serveSub(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, false)
	if !ok {
		return
	}
	sub := r.PathValue("sub")
	switch sub {
	case "phase", "executionduration", "destruction", "error", "quote", "owner", "parameters", "results", "runid":
	default:
		apierr.WriteNew(w, http.StatusNotFound, "not_found", "no job resource "+truncate(sub, 32))
		return
	}
	j, ok := m.loadJob(w, r, c)
	if !ok {
		return
	}
	switch sub {
	case "phase":
		writeText(w, string(j.Phase))
	case "executionduration":
		writeText(w, strconv.FormatInt(int64(j.ExecDuration/time.Second), 10))
	case "destruction":
		writeText(w, isoTime(j.Destruction))
	case "error":
		if j.ErrorSummary == "" {
			apierr.WriteNew(w, http.StatusNotFound, "no_error", "the job has no error")
			return
		}
		writeText(w, j.ErrorSummary)
	case "quote":
		writeText(w, isoTime(j.Quote))
	case "owner":
		writeText(w, j.Owner)
	case "runid":
		writeText(w, j.RunID)
	case "parameters", "results":
		v, err := m.view(r.Context(), j)
		if err != nil {
			m.storeError(w, r, "read runs", err)
			return
		}
		if sub == "parameters" {
			writeParameters(w, wantsXML(r), v)
		} else {
			writeResults(w, wantsXML(r), v)
		}
	}
}

func (m *Manager) servePostSub(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, true)
	if !ok {
		return
	}
	sub := r.PathValue("sub")
	switch sub {
	case "phase", "executionduration", "destruction":
	default:
		apierr.WriteNew(w, http.StatusMethodNotAllowed, "method_not_allowed", "job resource "+truncate(sub, 32)+" cannot be changed")
		return
	}
	q, err := formParams(r)
	if err != nil {
		m.answerError(w, r, err)
		return
	}
	j, ok := m.loadJob(w, r, c)
	if !ok {
		return
	}
	v, ok := one(w, q, sub)
	if !ok {
		return
	}
	if _, given := q[sub]; !given || len(q) != 1 {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "give "+strings.ToUpper(sub)+" (only)")
		return
	}
	if err := m.change(r.Context(), j.ID, sub, v); err != nil {
		m.answerError(w, r, err)
		return
	}
	m.seeOther(w, j.ID)
}

func (m *Manager) serveParameter(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, false)
	if !ok {
		return
	}
	j, ok := m.loadJob(w, r, c)
	if !ok {
		return
	}
	name := r.PathValue("name")
	switch strings.ToLower(name) {
	case "action":
		writeText(w, j.Action)
		return
	case "targets":
		writeText(w, j.Targets)
		return
	}
	for k, v := range j.Params {
		if strings.EqualFold(k, name) {
			writeText(w, v)
			return
		}
	}
	apierr.WriteNew(w, http.StatusNotFound, "not_found", "the job has no parameter "+truncate(name, 64))
}

func (m *Manager) serveResult(w http.ResponseWriter, r *http.Request) {
	c, ok := m.authorize(w, r, false)
	if !ok {
		return
	}
	j, ok := m.loadJob(w, r, c)
	if !ok {
		return
	}
	v, err := m.view(r.Context(), j)
	if err != nil {
		m.storeError(w, r, "read runs", err)
		return
	}
	id := r.PathValue("result")
	refs := v.results()
	i := slices.IndexFunc(refs, func(x resultRef) bool { return x.ID == id })
	if i < 0 {
		apierr.WriteNew(w, http.StatusNotFound, "result_not_found", "the job has no result "+truncate(id, 128))
		return
	}
	ref := refs[i]
	// A download takes as long as the client needs: it fails only when it
	// stalls for TransferIdleTimeout.
	out := m.newTransfer(w).writer()
	if ref.File == nil {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+j.ID+`-summary.csv"`)
		writeSummaryCSV(out, v.Runs)
		return
	}
	f, _, err := m.blobs.Open(r.Context(), ref.File.Path)
	if err != nil {
		m.log.Error("jobs: result file missing", "job", j.ID, "result", id, "err", err)
		apierr.WriteNew(w, http.StatusGone, "result_gone", "the result's file is no longer stored")
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", ref.MimeType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", `attachment; filename="`+ref.File.Name+`"`)
	w.Header().Set("ETag", `"`+ref.File.SHA256+`"`)
	w.Header().Set("X-Content-SHA256", ref.File.SHA256)
	http.ServeContent(out, r, "", v.Job.EndedAt, f)
}

// agentJSON is an agent in the API.
type agentJSON struct {
	ID          string          `json:"id"`
	Connected   bool            `json:"connected"`
	Node        string          `json:"node,omitempty"`
	Labels      []string        `json:"labels"`
	Actions     json.RawMessage `json:"actions"`
	Version     string          `json:"version,omitempty"`
	FirstSeen   time.Time       `json:"firstSeen"`
	LastSeen    time.Time       `json:"lastSeen"`
	RemoteAddr  string          `json:"remoteAddr,omitempty"`
	RunningJobs []string        `json:"runningJobs"`
}

func toAgentJSON(a store.Agent, running []string) agentJSON {
	out := agentJSON{ID: a.ID, Connected: a.Connected, Node: a.Node, Labels: a.Labels, Actions: a.Actions,
		Version: a.Version, FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, RemoteAddr: a.RemoteAddr, RunningJobs: running}
	if out.Labels == nil {
		out.Labels = []string{}
	}
	if len(out.Actions) == 0 {
		out.Actions = json.RawMessage("[]")
	}
	if out.RunningJobs == nil {
		out.RunningJobs = []string{}
	}
	return out
}

func (m *Manager) serveAgents(w http.ResponseWriter, r *http.Request) {
	if _, ok := m.authorize(w, r, false); !ok {
		return
	}
	agents, err := m.st.Agents(r.Context())
	if err != nil {
		m.storeError(w, r, "list agents", err)
		return
	}
	running, err := m.runningByAgent(r.Context())
	if err != nil {
		m.storeError(w, r, "list runs", err)
		return
	}
	out := make([]agentJSON, 0, len(agents))
	for _, a := range agents {
		out = append(out, toAgentJSON(a, running[a.ID]))
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"agents": out})
}

// runningByAgent maps agent ids to the jobs with an unfinished run there.
func (m *Manager) runningByAgent(ctx context.Context) (map[string][]string, error) {
	active, err := m.st.ActiveJobs(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, j := range active {
		if j.Phase != store.PhaseExecuting {
			continue
		}
		runs, err := m.st.Runs(ctx, j.ID)
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			if !r.State.Final() {
				out[r.AgentID] = append(out[r.AgentID], j.ID)
			}
		}
	}
	return out, nil
}

// serveUpload stores an output file an agent uploads for its run.
func (m *Manager) serveUpload(w http.ResponseWriter, r *http.Request) {
	if m.cfg.Authenticate == nil {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "unavailable", "the jobs API is not configured")
		return
	}
	c, e := m.cfg.Authenticate(r)
	if e != nil {
		apierr.Write(w, e)
		return
	}
	jobID, agentID, name := r.PathValue("id"), r.PathValue("agent"), r.PathValue("name")
	if !c.HasScope(auth.ScopeAgent) || c.Agent != agentID {
		apierr.WriteNew(w, http.StatusForbidden, "agent_forbidden", "only the agent that ran the job uploads its files (scope agent, claim agent)")
		return
	}
	if !jobproto.ValidFileName(name) {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_file_name", "file names are 1-128 of A-Z a-z 0-9 . _ - and do not start with . or -")
		return
	}
	want := strings.ToLower(r.Header.Get("X-Content-SHA256"))
	if len(want) != 64 {
		apierr.WriteNew(w, http.StatusBadRequest, "checksum_missing", "header X-Content-SHA256 must give the file's SHA-256 in hex")
		return
	}
	if r.ContentLength < 0 {
		apierr.WriteNew(w, http.StatusLengthRequired, "length_required", "Content-Length is required")
		return
	}
	if r.ContentLength > m.cfg.MaxFileBytes {
		apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "file_too_large", fmt.Sprintf("files are limited to %d bytes", m.cfg.MaxFileBytes))
		return
	}
	run, err := m.st.Run(r.Context(), jobID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		apierr.WriteNew(w, http.StatusNotFound, "run_not_found", "no run of this job on this agent")
		return
	}
	if err != nil {
		m.storeError(w, r, "read run", err)
		return
	}
	if run.State.Final() && run.State != store.RunLost {
		apierr.WriteNew(w, http.StatusConflict, "run_finished", "the run's result is already stored")
		return
	}
	if j, err := m.st.Job(r.Context(), jobID); err == nil && j.Phase == store.PhaseArchived {
		// 409 like a stored result: the agent stops uploading, and the hub
		// forgets the result it then sends.
		apierr.WriteNew(w, http.StatusConflict, "job_archived", "the job is archived: its results were destroyed")
		return
	}
	key := fileKey(jobID, agentID, name)
	release, ok := m.reserveRunBytes(r.Context(), runPrefix(jobID, agentID), key, r.ContentLength)
	if !ok {
		apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "run_files_too_large", fmt.Sprintf("a run's files are limited to %d bytes together (uploads in flight count)", m.cfg.MaxRunBytes))
		return
	}
	defer release() // after the Put below: the stored file counts from then on
	// An upload takes as long as the agent needs: it fails only when it
	// stalls for TransferIdleTimeout.
	t := m.newTransfer(w)
	body := &bodyReader{r: t.body(r.Body)}
	_, err = m.blobs.Put(r.Context(), key, body, r.ContentLength, func(i blob.Info) error {
		switch {
		case i.Size != r.ContentLength:
			return errLengthMismatch
		case i.SHA256 != want:
			return errChecksumMismatch
		}
		return nil
	})
	t.answer()
	switch {
	case err == nil:
		w.WriteHeader(http.StatusCreated)
	case errors.Is(body.err, os.ErrDeadlineExceeded):
		// net/http would read on to discard the rest of the body: the
		// connection closes instead.
		w.Header().Set("Connection", "close")
		apierr.WriteNew(w, http.StatusRequestTimeout, "upload_stalled", fmt.Sprintf("no byte of the upload arrived for %s", m.cfg.TransferIdleTimeout))
	case body.err != nil:
		apierr.WriteNew(w, http.StatusBadRequest, "upload_failed", "the upload was cut short")
	case errors.Is(err, errLengthMismatch), errors.Is(err, blob.ErrTooLarge):
		apierr.WriteNew(w, http.StatusBadRequest, "length_mismatch", "the body's length differs from Content-Length")
	case errors.Is(err, errChecksumMismatch):
		apierr.WriteNew(w, http.StatusBadRequest, "checksum_mismatch", "the body's SHA-256 differs from X-Content-SHA256")
	default:
		m.log.Error("jobs: upload", "job", jobID, "agent", agentID, "file", name, "err", err)
		apierr.WriteNew(w, http.StatusInsufficientStorage, "storage_failed", "the hub could not store the file")
	}
}

// Refusals of an upload's content by the check of its Put.
var (
	errLengthMismatch   = errors.New("the body's length differs from Content-Length")
	errChecksumMismatch = errors.New("the body's SHA-256 differs from X-Content-SHA256")
)

// bodyReader remembers the error of the request body it reads, which
// tells a failed upload (the client's fault) from a failed store (the
// hub's).
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// reserveRunBytes admits an upload of n bytes to key, one of the files of
// run (runPrefix): the run's stored files (less key, which the upload
// replaces), the uploads in flight and n must stay within MaxRunBytes.
// The check and the reservation are one step under uploadMu, so parallel
// uploads cannot pass the limit together. release gives the bytes back;
// call it after the file is stored (listed from then on) or given up.
func (m *Manager) reserveRunBytes(ctx context.Context, run, key string, n int64) (release func(), ok bool) {
	m.uploadMu.Lock()
	defer m.uploadMu.Unlock()
	if m.storedBytes(ctx, run, key)+m.reserved[run]+n > m.cfg.MaxRunBytes {
		return nil, false
	}
	m.reserved[run] += n
	return func() {
		m.uploadMu.Lock()
		if m.reserved[run] -= n; m.reserved[run] <= 0 {
			delete(m.reserved, run)
		}
		m.uploadMu.Unlock()
	}, true
}

// storedBytes adds the sizes of the files stored under prefix except
// skip. A listing that fails counts as empty (the upload then fails on
// the same storage, if it is really gone).
func (m *Manager) storedBytes(ctx context.Context, prefix, skip string) int64 {
	files, err := m.blobs.List(ctx, prefix)
	if err != nil {
		m.log.Warn("jobs: list stored files", "prefix", prefix, "err", err)
		return 0
	}
	var n int64
	for _, f := range files {
		if f.Key != skip {
			n += f.Size
		}
	}
	return n
}
