package uwsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/blob"
	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Config wires an API.
type Config struct {
	// Jobs is the state machine the API drives; its Config has the API's
	// settings (MaxWait, MaxWaitsPerSubject, TransferIdleTimeout,
	// MaxFileBytes, MaxRunBytes) and its Blobs the output files. Required.
	Jobs *jobs.Manager
	// Authenticate checks a request's token (signature, expiry,
	// revocation). Without it every request is answered 503.
	Authenticate func(r *http.Request) (*auth.Claims, *apierr.Error)
	// BasicRealm, when set, is the realm offered in a Basic challenge
	// beside the Bearer one of every 401 (WWW-Authenticate), for clients
	// that can only send HTTP Basic credentials; Authenticate must then
	// accept them. Empty: only Bearer is offered.
	BasicRealm string
	// Logger receives the API's logs; nil discards them.
	Logger *slog.Logger
}

// API serves the jobs and agents API (docs/jobs.md). Create it with New
// and Register it on a mux.
type API struct {
	jobs         *jobs.Manager
	cfg          jobs.Config // the settings, defaults applied
	blobs        blob.Store
	authenticate func(r *http.Request) (*auth.Claims, *apierr.Error)
	basicRealm   string // Config.BasicRealm
	log          *slog.Logger
	base         string // public URL of the job list, set by Register

	waitsRefused atomic.Uint64 // WAIT requests refused by MaxWaitsPerSubject

	mu       sync.Mutex
	waitsBy  map[string]int        // blocked WAIT requests per subject; guarded by mu
	rendered map[string]*rendering // job id and format → its last rendering for woken WAITs; guarded by mu

	uploadMu sync.Mutex
	// reserved holds the bytes of the uploads in flight per run
	// (runPrefix), guarded by uploadMu: a run's stored files plus these
	// never pass MaxRunBytes.
	reserved map[string]int64
}

// New returns an API for cfg.
func New(cfg Config) (*API, error) {
	if cfg.Jobs == nil {
		return nil, errors.New("uwsapi: Jobs is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &API{jobs: cfg.Jobs, cfg: cfg.Jobs.Config(), blobs: cfg.Jobs.Blobs(), authenticate: cfg.Authenticate, basicRealm: cfg.BasicRealm, log: cfg.Logger,
		waitsBy: map[string]int{}, rendered: map[string]*rendering{}, reserved: map[string]int64{}}
	cfg.Jobs.SetDefinitionRunner(h.runScheduled) // schedules.go
	return h, nil
}

// Register adds the jobs and agents API to mux. base is the public URL of
// the server ("https://hub.example.org"), used in Location headers and
// hrefs.
func (h *API) Register(mux *http.ServeMux, base string) {
	h.base = strings.TrimSuffix(base, "/") + "/api/v1/jobs"
	mux.HandleFunc("GET /api/v1/agents", h.serveAgents)
	mux.HandleFunc("DELETE /api/v1/agents/{id}", h.serveForgetAgent)
	mux.HandleFunc("GET /api/v1/jobs", h.serveList)
	mux.HandleFunc("POST /api/v1/jobs", h.serveCreate)
	mux.HandleFunc("GET /api/v1/jobs/{id}", h.serveJob)
	mux.HandleFunc("POST /api/v1/jobs/{id}", h.servePostJob)
	mux.HandleFunc("DELETE /api/v1/jobs/{id}", h.serveDelete)
	mux.HandleFunc("GET /api/v1/jobs/{id}/{sub}", h.serveSub)
	mux.HandleFunc("POST /api/v1/jobs/{id}/{sub}", h.servePostSub)
	mux.HandleFunc("GET /api/v1/jobs/{id}/parameters/{name}", h.serveParameter)
	mux.HandleFunc("GET /api/v1/jobs/{id}/results/{result...}", h.serveResult)
	mux.HandleFunc("GET /api/v1/jobs/{id}/runs/{agent}/log", h.serveRunLog)
	mux.HandleFunc("PUT /api/v1/jobs/{id}/runs/{agent}/files/{name}", h.serveUpload)
	mux.HandleFunc("GET /api/v1/export", h.serveExport)
	mux.HandleFunc("GET /api/v1/compare", h.serveCompare)
	mux.HandleFunc("GET /api/v1/definitions", h.serveDefinitions)
	mux.HandleFunc("GET /api/v1/definitions/{name}", h.serveDefinition)
	mux.HandleFunc("PUT /api/v1/definitions/{name}", h.servePutDefinition)
	mux.HandleFunc("POST /api/v1/definitions/{name}/jobs", h.serveRunDefinition)
	mux.HandleFunc("POST /api/v1/definitions/{name}/versions/{version}/jobs", h.serveRunDefinition)
	mux.HandleFunc("GET /api/v1/definitions/{name}/jobs", h.serveDefinitionJobs)
	mux.HandleFunc("GET /api/v1/definitions/{name}/schedule", h.serveSchedule)
	mux.HandleFunc("PUT /api/v1/definitions/{name}/schedule", h.serveSchedule)
	mux.HandleFunc("DELETE /api/v1/definitions/{name}/schedule", h.serveSchedule)
}

// caller is an authenticated API user.
type caller struct {
	claims *auth.Claims
	admin  bool
}

// authorize checks the token and that it may read (write false) or write.
func (h *API) authorize(w http.ResponseWriter, r *http.Request, write bool) (*caller, bool) {
	if h.authenticate == nil {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "unavailable", "the jobs API is not configured")
		return nil, false
	}
	c, e := h.authenticate(r)
	if e != nil {
		if e.Status == http.StatusUnauthorized {
			h.challenge(w, r)
		}
		apierr.Write(w, e)
		return nil, false
	}
	cl := &caller{claims: c, admin: c.Allows(auth.ScopeJobsAdmin)}
	switch {
	case cl.admin:
	case write && !c.HasScope(auth.ScopeJobsWrite):
		apierr.WriteNew(w, http.StatusForbidden, wire.ErrorScopeForbidden, "this needs scope jobs:write")
		return nil, false
	case !write && !c.HasScope(auth.ScopeJobsRead) && !c.HasScope(auth.ScopeJobsWrite):
		apierr.WriteNew(w, http.StatusForbidden, wire.ErrorScopeForbidden, "this needs scope jobs:read")
		return nil, false
	case c.Subject == "":
		apierr.WriteNew(w, http.StatusForbidden, "subject_missing", "the token has no sub claim: jobs belong to a subject")
		return nil, false
	}
	return cl, true
}

// challenge adds the WWW-Authenticate challenges of a 401 (RFC 9110 §11.6.1,
// RFC 6750 §3): Bearer, with error="invalid_token" when a token was sent,
// and Basic when BasicRealm is set.
func (h *API) challenge(w http.ResponseWriter, r *http.Request) {
	bearer := `Bearer realm="switchboard"`
	if r.Header.Get("Authorization") != "" {
		bearer += `, error="invalid_token"`
	}
	w.Header().Add("WWW-Authenticate", bearer)
	if h.basicRealm != "" {
		w.Header().Add("WWW-Authenticate", `Basic realm=`+strconv.Quote(h.basicRealm)+`, charset="UTF-8"`)
	}
}

// loadJob reads the job named in the path and checks the caller may see
// it: 404 when absent, 403 when another owner's.
func (h *API) loadJob(w http.ResponseWriter, r *http.Request, c *caller) (store.Job, bool) {
	return h.loadJobID(w, r, c, r.PathValue("id"))
}

// loadJobID is loadJob of the job id.
func (h *API) loadJobID(w http.ResponseWriter, r *http.Request, c *caller, id string) (store.Job, bool) {
	j, err := h.jobs.Job(r.Context(), id)
	return j, h.checkOwned(w, r, c, "job", j.Owner, err, "no job "+jobs.Truncate(id, 64))
}

// storeError answers a failed store call with 503, never a 500.
func (h *API) storeError(w http.ResponseWriter, r *http.Request, op string, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return
	}
	h.log.Error("jobs: store failed", "op", op, "err", err)
	apierr.WriteNew(w, http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable; nothing was changed, retry later")
}

// answerError maps an error of a state change to its status.
func (h *API) answerError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *jobs.PhaseError
	var te *jobs.TargetError
	var qe *paramError
	switch {
	case errors.As(err, &pe):
		apierr.WriteNew(w, http.StatusForbidden, "phase_forbidden", pe.Msg)
	case errors.As(err, &te):
		apierr.WriteNew(w, http.StatusBadRequest, te.Code, te.Msg)
	case errors.Is(err, errBodyTooLarge):
		apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is above 1 MiB")
	case errors.As(err, &qe):
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", qe.Error())
	case errors.Is(err, store.ErrNotFound):
		apierr.WriteNew(w, http.StatusNotFound, "job_not_found", "no such job")
	default:
		h.storeError(w, r, "update job", err)
	}
}

func (h *API) seeOther(w http.ResponseWriter, id string) {
	loc := h.base
	if id != "" {
		loc += "/" + id
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusSeeOther)
}

// view loads the runs of j and their stored logs for rendering.
func (h *API) view(ctx context.Context, j store.Job) (*jobView, error) {
	runs, err := h.jobs.Runs(ctx, j.ID)
	if err != nil {
		return nil, err
	}
	logs, err := h.blobs.List(ctx, jobs.LogPrefix(j.ID))
	if err != nil {
		return nil, err
	}
	v := &jobView{Job: j, Runs: runs, Logs: logs, Base: h.base}
	if len(j.Matrix) > 0 {
		if err := h.loadMatrix(ctx, v); err != nil {
			return nil, err
		}
	}
	if len(j.Steps) > 0 {
		if err := h.loadSteps(ctx, v); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (h *API) serveList(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	jobs, ok := h.listJobs(w, r, c, q, nil)
	if !ok {
		return
	}
	writeJobList(w, wantsXML(r), jobs, h.base)
}

// listFilter reads the job list's filters: PHASE (repeatable), AFTER,
// LAST, RUNID, LABEL, DEFINITION, ACTION and OWNER; a caller without
// jobs:admin sees only its own jobs (OWNER naming another is 403
// job_forbidden). Other parameters are ignored, as UWS lists do.
func (h *API) listFilter(w http.ResponseWriter, r *http.Request, c *caller, q map[string][]string) (store.JobFilter, bool) {
	f := store.JobFilter{Limit: 10000}
	if !c.admin {
		f.Owner = c.claims.Subject
	}
	var err error
	if f.Phases, err = parsePhases(q["phase"]); err != nil {
		h.answerError(w, r, err)
		return f, false
	}
	if v, ok := one(w, q, "after"); !ok {
		return f, false
	} else if v != "" {
		if f.After, err = parseAfter(v); err != nil {
			h.answerError(w, r, err)
			return f, false
		}
	}
	if v, ok := one(w, q, "last"); !ok {
		return f, false
	} else if v != "" {
		if f.Last, err = parseLast(v); err != nil {
			h.answerError(w, r, err)
			return f, false
		}
	}
	for name, dst := range map[string]*string{"runid": &f.RunID, "label": &f.Label, "definition": &f.Definition, "action": &f.Action} {
		v, ok := one(w, q, name)
		if !ok {
			return f, false
		}
		*dst = v
	}
	owner, ok := one(w, q, "owner")
	if !ok {
		return f, false
	}
	switch {
	case owner == "":
	case c.admin:
		f.Owner = owner
	case owner != c.claims.Subject:
		apierr.WriteNew(w, http.StatusForbidden, "job_forbidden", "OWNER other than yourself needs scope jobs:admin")
		return f, false
	}
	return f, true
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
	Action  string `json:"action"`
	Targets string `json:"targets"`
	Require string `json:"require"` // REQUIRE: all (default) or available
	// Parameters maps each action parameter to a string, or to an array
	// of strings: a matrix parameter (one run per agent per combination).
	Parameters        map[string]paramValues `json:"parameters"`
	Labels            []string               `json:"labels"`
	RunID             string                 `json:"runId"`
	Phase             string                 `json:"phase"`
	ExecutionDuration *int64                 `json:"executionDuration"`
	Destruction       string                 `json:"destruction"`
	// Steps make a test of several steps (steps.go): action, targets
	// and parameters are then each step's.
	Steps []stepRequest `json:"steps"`
}

const maxJSONBody = 1 << 20

func (h *API) serveCreate(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, true)
	if !ok {
		return
	}
	req, ok := h.readCreate(w, r)
	if !ok {
		return
	}
	h.create(w, r, c, req, store.Definition{})
}

// create creates the job req asks for (started from the definition def,
// when its Name is set) and answers 303 to it, or the error.
func (h *API) create(w http.ResponseWriter, r *http.Request, c *caller, req createRequest, def store.Definition) {
	plain, matrix := splitMatrix(req.Parameters)
	spec := jobs.Spec{RunID: req.RunID, Owner: c.claims.Subject, Action: req.Action,
		Targets: strings.TrimSpace(req.Targets), Params: plain, Matrix: matrix, Require: strings.ToLower(req.Require),
		Labels: req.Labels, Definition: def.Name, DefinitionVersion: def.Version}
	if len(req.Steps) > 0 {
		spec.Steps = stepSpecs(req.Steps)
	}
	if c.claims.Subject == "" {
		spec.Owner = "admin"
	}
	if len(spec.RunID) > 256 || !utf8.ValidString(spec.RunID) || strings.ContainsRune(spec.RunID, 0) {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "RUNID must be at most 256 bytes of UTF-8 text without NUL")
		return
	}
	var err error
	if req.Destruction != "" {
		if spec.Destruction, err = parseDestruction(req.Destruction, h.jobs.Now()); err != nil {
			h.answerError(w, r, err)
			return
		}
	}
	if req.ExecutionDuration != nil {
		if spec.ExecDuration, err = parseExecutionDuration(strconv.FormatInt(*req.ExecutionDuration, 10)); err != nil {
			h.answerError(w, r, err)
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
	j, err := h.jobs.Create(r.Context(), spec)
	if err != nil {
		h.answerError(w, r, err) // a *jobs.TargetError, or the store's
		return
	}
	_ = h.jobs.AuditJob(r.Context(), spec.Owner, jobs.AuditJobCreate, j) // logged if it fails
	if runNow {
		if err := h.change(r.Context(), spec.Owner, j.ID, "phase", "RUN"); err != nil {
			h.answerError(w, r, err)
			return
		}
	}
	h.seeOther(w, j.ID)
}

// readCreate reads a creation request, form-encoded or JSON.
func (h *API) readCreate(w http.ResponseWriter, r *http.Request) (createRequest, bool) {
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
		h.answerError(w, r, err)
		return req, false
	}
	req.Parameters = map[string]paramValues{}
	for k, vs := range q {
		switch k {
		case "label":
			req.Labels = append(req.Labels, vs...)
			continue
		case "action", "targets", "require", "runid", "phase", "destruction", "executionduration":
			if len(vs) != 1 {
				apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", strings.ToUpper(k)+" is given more than once")
				return req, false
			}
		}
		v := vs[0]
		switch k {
		case "action":
			req.Action = v
		case "targets":
			req.Targets = v
		case "require":
			req.Require = v
		case "runid":
			req.RunID = v
		case "phase":
			req.Phase = v
		case "destruction":
			req.Destruction = v
		case "executionduration":
			d, err := parseExecutionDuration(v)
			if err != nil {
				h.answerError(w, r, err)
				return req, false
			}
			n := int64(d / time.Second)
			req.ExecutionDuration = &n
		case "quote", "owner", "wait", "after", "last":
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", strings.ToUpper(k)+" cannot be set at creation")
			return req, false
		default:
			// An action parameter given several times is a matrix
			// parameter (one run per agent per combination).
			req.Parameters[k] = vs
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

func (h *API) serveJob(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	var wait time.Duration
	if v, ok := one(w, q, "wait"); !ok {
		return
	} else if v != "" {
		if wait, err = parseWait(v, h.cfg.MaxWait); err != nil {
			h.answerError(w, r, err)
			return
		}
	}
	var inPhase store.Phase
	if v, ok := one(w, q, "phase"); !ok {
		return
	} else if v != "" {
		ps, err := parsePhases([]string{v})
		if err != nil {
			h.answerError(w, r, err)
			return
		}
		inPhase = ps[0]
	}
	id := r.PathValue("id")
	var w0 *jobs.Watcher
	if wait > 0 {
		w0 = h.jobs.Watch(id) // before reading: no change can slip between
	}
	j, ok := h.loadJob(w, r, c)
	if !ok {
		if w0 != nil {
			h.jobs.Unwatch(id, w0)
		}
		return
	}
	if w0 != nil && !(activePhase(j.Phase) && (inPhase == "" || j.Phase == inPhase)) {
		h.jobs.Unwatch(id, w0)
	}
	if wait > 0 && activePhase(j.Phase) && (inPhase == "" || j.Phase == inPhase) {
		release, admitted := h.admitWait(c.claims.Subject)
		if !admitted {
			h.jobs.Unwatch(id, w0)
			w.Header().Set("Retry-After", "1")
			apierr.WriteNew(w, http.StatusTooManyRequests, "too_many_waits", fmt.Sprintf(
				"this subject already has %d WAIT requests blocked; retry when one has answered", h.cfg.MaxWaitsPerSubject))
			return
		}
		// The wait may outlast the server's ordinary request timeout: the
		// connection stays open to its end, and the answer then has the
		// transfer idle time to go out.
		extendDeadlines(w, time.Now().Add(wait+h.cfg.TransferIdleTimeout))
		woken, ok := h.jobs.WaitPhase(r.Context(), j, w0, wait)
		release()
		if !ok {
			return // the client went away
		}
		if woken != nil {
			// Every request blocked on this job wakes at once: they share
			// one rendering of the new state.
			h.writeRendering(w, *woken, wantsXML(r))
			return
		}
		if j, ok = h.loadJob(w, r, c); !ok { // the wait ended (or the job went): read it again
			return
		}
	}
	v, err := h.view(r.Context(), j)
	if err != nil {
		h.storeError(w, r, "read runs", err)
		return
	}
	writeJob(w, wantsXML(r), v)
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

// renderTimeout bounds the store reads of one shared rendering.
const renderTimeout = 30 * time.Second

// WaitsRefused returns how many WAIT requests were refused (429
// too_many_waits) because their subject had MaxWaitsPerSubject blocked.
func (h *API) WaitsRefused() uint64 { return h.waitsRefused.Load() }

// admitWait takes one of subject's MaxWaitsPerSubject WAIT slots; call
// release when the request stops waiting. ok is false (and the refusal
// counted) when the subject has them all.
func (h *API) admitWait(subject string) (release func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waitsBy[subject] >= h.cfg.MaxWaitsPerSubject {
		h.waitsRefused.Add(1)
		return nil, false
	}
	h.waitsBy[subject]++
	return func() {
		h.mu.Lock()
		if h.waitsBy[subject]--; h.waitsBy[subject] <= 0 {
			delete(h.waitsBy, subject)
		}
		h.mu.Unlock()
	}, true
}

// writeRendering writes j's document, rendering it at most once per job
// version, run changes and format.
func (h *API) writeRendering(w http.ResponseWriter, j store.Job, asXML bool) {
	key := j.ID + "|json"
	if asXML {
		key = j.ID + "|xml"
	}
	gen := h.jobs.RunsVersion(j.ID)
	h.mu.Lock()
	rd := h.rendered[key]
	if rd == nil || !rd.updated.Equal(j.UpdatedAt) || rd.gen != gen {
		if len(h.rendered) >= maxRenderings {
			clear(h.rendered)
		}
		rd = &rendering{updated: j.UpdatedAt, gen: gen}
		h.rendered[key] = rd
	}
	h.mu.Unlock()
	rd.once.Do(func() {
		// Not the request's context: the rendering is every woken
		// request's.
		ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
		defer cancel()
		v, err := h.view(ctx, j)
		if err != nil {
			rd.err = err
			return
		}
		rd.rec = newRecorder()
		writeJob(rd.rec, asXML, v)
	})
	if rd.err != nil {
		h.log.Error("jobs: store failed", "op", "read runs", "err", rd.err)
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

func (h *API) servePostJob(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, true)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	j, ok := h.loadJob(w, r, c)
	if !ok || refuseChild(w, j) {
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
		if err := h.remove(r.Context(), c.claims.Subject, j); err != nil {
			h.answerError(w, r, err)
			return
		}
		h.seeOther(w, "")
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
		if err := h.change(r.Context(), c.claims.Subject, j.ID, name, v); err != nil {
			h.answerError(w, r, err)
			return
		}
	}
	h.seeOther(w, j.ID)
}

// change applies one UWS state change that actor asked for; RUN and
// ABORT are audited.
func (h *API) change(ctx context.Context, actor, id, name, v string) error {
	switch name {
	case "phase":
		switch strings.ToUpper(v) {
		case "RUN":
			j, err := h.jobs.Run(ctx, id)
			if err == nil {
				_ = h.jobs.AuditJob(ctx, actor, jobs.AuditJobRun, j) // logged if it fails
			}
			return err
		case "ABORT":
			j, err := h.jobs.Abort(id, "")
			if err == nil {
				_ = h.jobs.AuditJob(ctx, actor, jobs.AuditJobAbort, j) // logged if it fails
			}
			return err
		}
		return &paramError{Param: "PHASE", Message: "must be RUN or ABORT"}
	case "destruction":
		t, err := parseDestruction(v, h.jobs.Now())
		if err != nil {
			return err
		}
		return h.jobs.SetDestruction(ctx, id, t)
	case "executionduration":
		d, err := parseExecutionDuration(v)
		if err != nil {
			return err
		}
		return h.jobs.SetExecutionDuration(ctx, id, d)
	}
	return nil
}

func (h *API) serveDelete(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, true)
	if !ok {
		return
	}
	j, ok := h.loadJob(w, r, c)
	if !ok || refuseChild(w, j) {
		return
	}
	if err := h.remove(r.Context(), c.claims.Subject, j); err != nil {
		h.answerError(w, r, err)
		return
	}
	h.seeOther(w, "")
}

// remove deletes job j for actor (audited) and forgets its renderings.
func (h *API) remove(ctx context.Context, actor string, j store.Job) error {
	id := j.ID
	if err := h.jobs.Remove(ctx, id); err != nil {
		return err
	}
	_ = h.jobs.AuditJob(ctx, actor, jobs.AuditJobDelete, j) // logged if it fails
	h.mu.Lock()
	delete(h.rendered, id+"|json")
	delete(h.rendered, id+"|xml")
	h.mu.Unlock()
	return nil
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

func (h *API) serveSub(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	sub := r.PathValue("sub")
	switch sub {
	case "phase", "executionduration", "destruction", "error", "quote", "owner", "parameters", "results", "runid":
	default:
		apierr.WriteNew(w, http.StatusNotFound, wire.ErrorNotFound, "no job resource "+jobs.Truncate(sub, 32))
		return
	}
	j, ok := h.loadJob(w, r, c)
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
		v, err := h.view(r.Context(), j)
		if err != nil {
			h.storeError(w, r, "read runs", err)
			return
		}
		if sub == "parameters" {
			writeParameters(w, wantsXML(r), v)
		} else {
			writeResults(w, wantsXML(r), v)
		}
	}
}

func (h *API) servePostSub(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, true)
	if !ok {
		return
	}
	sub := r.PathValue("sub")
	switch sub {
	case "phase", "executionduration", "destruction":
	default:
		apierr.WriteNew(w, http.StatusMethodNotAllowed, wire.ErrorMethodNotAllowed, "job resource "+jobs.Truncate(sub, 32)+" cannot be changed")
		return
	}
	q, err := formParams(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	j, ok := h.loadJob(w, r, c)
	if !ok || refuseChild(w, j) {
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
	if err := h.change(r.Context(), c.claims.Subject, j.ID, sub, v); err != nil {
		h.answerError(w, r, err)
		return
	}
	h.seeOther(w, j.ID)
}

func (h *API) serveParameter(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	j, ok := h.loadJob(w, r, c)
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
	case "require":
		if j.Require == "" {
			writeText(w, jobs.RequireAll)
		} else {
			writeText(w, j.Require)
		}
		return
	}
	for k, v := range j.Params {
		if strings.EqualFold(k, name) {
			writeText(w, v)
			return
		}
	}
	apierr.WriteNew(w, http.StatusNotFound, wire.ErrorNotFound, "the job has no parameter "+jobs.Truncate(name, 64))
}

func (h *API) serveResult(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	j, ok := h.loadJob(w, r, c)
	if !ok {
		return
	}
	v, err := h.view(r.Context(), j)
	if err != nil {
		h.storeError(w, r, "read runs", err)
		return
	}
	id := r.PathValue("result")
	refs := v.results()
	i := slices.IndexFunc(refs, func(x resultRef) bool { return x.ID == id })
	if i < 0 {
		apierr.WriteNew(w, http.StatusNotFound, "result_not_found", "the job has no result "+jobs.Truncate(id, 128))
		return
	}
	ref := refs[i]
	if id == MatrixJSONResult || id == MatrixCSVResult {
		h.serveMatrixResult(w, r, v, id)
		return
	}
	// A download takes as long as the client needs: it fails only when it
	// stalls for TransferIdleTimeout.
	out := h.newTransfer(w).writer()
	if ref.File == nil {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+j.ID+`-summary.csv"`)
		if v.Matrix != nil {
			// A matrix job's runs differ by their parameters: the long
			// format names them.
			writeExportCSV(out, exportRows(v))
			return
		}
		writeSummaryCSV(out, v.Runs)
		return
	}
	f, _, err := h.blobs.Open(r.Context(), ref.File.Path)
	if err != nil {
		h.log.Error("jobs: result file missing", "job", j.ID, "result", id, "err", err)
		apierr.WriteNew(w, http.StatusGone, "result_gone", "the result's file is no longer stored")
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", ref.MimeType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", `attachment; filename="`+ref.File.Name+`"`)
	if ref.File.SHA256 != "" { // a stored log's is not recorded
		w.Header().Set("ETag", `"`+ref.File.SHA256+`"`)
		w.Header().Set("X-Content-SHA256", ref.File.SHA256)
	}
	http.ServeContent(out, r, "", v.Job.EndedAt, f)
}

// serveRunLog answers GET /api/v1/jobs/{id}/runs/{agent}/log with a run's
// log, text/plain: while the run goes on, what the node holding its
// agent's channel has kept so far (X-Log-Complete: false; its lines are
// numbered 1 to n, as the seq of the live log's messages, so a late viewer
// shows it and then the live lines past it); once it ended, the stored log
// (the result logs/{agent}.txt; X-Log-Complete: true); empty when none is
// kept (no output yet, or the agent's channel is on another node). 404
// run_not_found when the job has no run of that agent.
func (h *API) serveRunLog(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	j, ok := h.loadJob(w, r, c)
	if !ok {
		return
	}
	agent := r.PathValue("agent")
	hd := w.Header()
	if data, live := h.jobs.RunLogSoFar(j.ID, agent); live {
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Log-Complete", "false")
		_, _ = h.newTransfer(w).writer().Write(data)
		return
	}
	runs, err := h.jobs.Runs(r.Context(), j.ID)
	if err != nil {
		h.storeError(w, r, "read runs", err)
		return
	}
	i := slices.IndexFunc(runs, func(run store.Run) bool { return run.AgentID == agent })
	if i < 0 {
		apierr.WriteNew(w, http.StatusNotFound, "run_not_found", "the job has no run of agent "+jobs.Truncate(agent, 64))
		return
	}
	f, _, err := h.blobs.Open(r.Context(), jobs.LogKey(j.ID, agent))
	if errors.Is(err, blob.ErrNotFound) || err == nil && j.Phase == store.PhaseArchived {
		if f != nil {
			f.Close()
		}
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Log-Complete", strconv.FormatBool(runs[i].State.Final()))
		w.WriteHeader(http.StatusOK)
		return
	}
	if err != nil {
		h.storeError(w, r, "open a run's log", err)
		return
	}
	defer f.Close()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Log-Complete", "true")
	http.ServeContent(h.newTransfer(w).writer(), r, "", j.EndedAt, f)
}

func (h *API) serveAgents(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.authorize(w, r, false); !ok {
		return
	}
	agents, err := h.jobs.Agents(r.Context())
	if err != nil {
		h.storeError(w, r, "list agents", err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"agents": agents})
}

// serveForgetAgent forgets a known agent that is not connected (jobs:admin;
// docs/jobs.md, "Agents"): 204, 404 no_such_agent, 409 agent_connected.
func (h *API) serveForgetAgent(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, true)
	if !ok {
		return
	}
	if !c.admin {
		apierr.WriteNew(w, http.StatusForbidden, wire.ErrorScopeForbidden, "this needs scope jobs:admin")
		return
	}
	id := r.PathValue("id")
	err := h.jobs.ForgetAgent(r.Context(), id, c.claims.Subject)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, store.ErrNotFound):
		apierr.WriteNew(w, http.StatusNotFound, "no_such_agent", "no agent "+jobs.Truncate(id, 64)+" is known")
	case errors.Is(err, jobs.ErrAgentConnected):
		apierr.WriteNew(w, http.StatusConflict, "agent_connected",
			"agent "+jobs.Truncate(id, 64)+" is connected; stop it (and revoke its token) first, then forget it")
	default:
		h.storeError(w, r, "forget agent", err)
	}
}

// serveUpload stores an output file an agent uploads for its run.
func (h *API) serveUpload(w http.ResponseWriter, r *http.Request) {
	if h.authenticate == nil {
		apierr.WriteNew(w, http.StatusServiceUnavailable, "unavailable", "the jobs API is not configured")
		return
	}
	c, e := h.authenticate(r)
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
	if r.ContentLength > h.cfg.MaxFileBytes {
		apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "file_too_large", fmt.Sprintf("files are limited to %d bytes", h.cfg.MaxFileBytes))
		return
	}
	run, err := h.jobs.AgentRun(r.Context(), jobID, agentID)
	if errors.Is(err, store.ErrNotFound) {
		apierr.WriteNew(w, http.StatusNotFound, "run_not_found", "no run of this job on this agent")
		return
	}
	if err != nil {
		h.storeError(w, r, "read run", err)
		return
	}
	if run.State.Final() && run.State != store.RunLost {
		apierr.WriteNew(w, http.StatusConflict, "run_finished", "the run's result is already stored")
		return
	}
	if j, err := h.jobs.Job(r.Context(), jobID); err == nil && j.Phase == store.PhaseArchived {
		// 409 like a stored result: the agent stops uploading, and the hub
		// forgets the result it then sends.
		apierr.WriteNew(w, http.StatusConflict, "job_archived", "the job is archived: its results were destroyed")
		return
	}
	key := jobs.FileKey(jobID, agentID, name)
	release, ok := h.reserveRunBytes(r.Context(), jobs.RunPrefix(jobID, agentID), key, r.ContentLength)
	if !ok {
		apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "run_files_too_large", fmt.Sprintf("a run's files are limited to %d bytes together (uploads in flight count)", h.cfg.MaxRunBytes))
		return
	}
	defer release() // after the Put below: the stored file counts from then on
	// An upload takes as long as the agent needs: it fails only when it
	// stalls for TransferIdleTimeout.
	t := h.newTransfer(w)
	body := &bodyReader{r: t.body(r.Body)}
	_, err = h.blobs.Put(r.Context(), key, body, r.ContentLength, func(i blob.Info) error {
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
		apierr.WriteNew(w, http.StatusRequestTimeout, "upload_stalled", fmt.Sprintf("no byte of the upload arrived for %s", h.cfg.TransferIdleTimeout))
	case body.err != nil:
		apierr.WriteNew(w, http.StatusBadRequest, "upload_failed", "the upload was cut short")
	case errors.Is(err, errLengthMismatch), errors.Is(err, blob.ErrTooLarge):
		apierr.WriteNew(w, http.StatusBadRequest, "length_mismatch", "the body's length differs from Content-Length")
	case errors.Is(err, errChecksumMismatch):
		apierr.WriteNew(w, http.StatusBadRequest, "checksum_mismatch", "the body's SHA-256 differs from X-Content-SHA256")
	case errors.Is(err, store.ErrUnavailable): // result files in PostgreSQL (a cluster)
		h.log.Warn("jobs: upload: the database is unavailable", "job", jobID, "agent", agentID, "file", name, "err", err)
		w.Header().Set("Retry-After", "5")
		apierr.WriteNew(w, http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable; nothing was stored, retry later")
	default:
		h.log.Error("jobs: upload", "job", jobID, "agent", agentID, "file", name, "err", err)
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
func (h *API) reserveRunBytes(ctx context.Context, run, key string, n int64) (release func(), ok bool) {
	h.uploadMu.Lock()
	defer h.uploadMu.Unlock()
	if h.storedBytes(ctx, run, key)+h.reserved[run]+n > h.cfg.MaxRunBytes {
		return nil, false
	}
	h.reserved[run] += n
	return func() {
		h.uploadMu.Lock()
		if h.reserved[run] -= n; h.reserved[run] <= 0 {
			delete(h.reserved, run)
		}
		h.uploadMu.Unlock()
	}, true
}

// storedBytes adds the sizes of the files stored under prefix except
// skip. A listing that fails counts as empty (the upload then fails on
// the same storage, if it is really gone).
func (h *API) storedBytes(ctx context.Context, prefix, skip string) int64 {
	files, err := h.blobs.List(ctx, prefix)
	if err != nil {
		h.log.Warn("jobs: list stored files", "prefix", prefix, "err", err)
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
