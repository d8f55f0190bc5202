package uwsapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Saved test definitions (docs/jobs.md, "Saved test definitions"):
//
//	GET  /api/v1/definitions                          the newest version of each
//	PUT  /api/v1/definitions/{name}                   store the next version
//	GET  /api/v1/definitions/{name}[?version=N]       one version, and the list of versions
//	POST /api/v1/definitions/{name}/jobs              start a job from the newest version
//	POST /api/v1/definitions/{name}/versions/{v}/jobs start a job from version v
//	GET  /api/v1/definitions/{name}/jobs              the jobs started from it (the job list's filters apply)
//
// A definition belongs to the subject that stored its first version;
// others (but jobs:admin) get 403.

// definitionSpec is what a definition stores: a job creation without its
// run-specific fields (RUNID, PHASE, DESTRUCTION).
type definitionSpec struct {
	Action            string                 `json:"action"`
	Targets           string                 `json:"targets"`
	Require           string                 `json:"require,omitempty"`
	Parameters        map[string]paramValues `json:"parameters,omitempty"`
	Labels            []string               `json:"labels,omitempty"`
	ExecutionDuration *int64                 `json:"executionDuration,omitempty"`
	// Steps make a test of several steps (then without action, targets
	// and parameters of its own).
	Steps []stepRequest `json:"steps,omitempty"`
}

type jsonDefinitionVersion struct {
	Version   int    `json:"version"`
	CreatedAt string `json:"createdAt"`
}

type jsonDefinition struct {
	Name      string          `json:"name"`
	Version   int             `json:"version"`
	Owner     string          `json:"owner"`
	CreatedAt string          `json:"createdAt"`
	Href      string          `json:"href"`
	Spec      json.RawMessage `json:"spec,omitempty"`
	// Versions lists every version of the name (in a definition's
	// document, not in the list).
	Versions []jsonDefinitionVersion `json:"versions,omitempty"`
}

// definitionsBase is the URL of the definition list.
func (h *API) definitionsBase() string { return strings.TrimSuffix(h.base, "/jobs") + "/definitions" }

func (h *API) definitionURL(name string) string {
	return h.definitionsBase() + "/" + url.PathEscape(name)
}

func (h *API) definitionDoc(d store.Definition) jsonDefinition {
	return jsonDefinition{Name: d.Name, Version: d.Version, Owner: d.Owner, CreatedAt: formatTime(d.CreatedAt),
		Href: h.definitionURL(d.Name)}
}

// loadDefinition reads the version of the definition named in the path
// (0: the newest) and checks the caller may use it: 400 for a bad name,
// 404 when absent, 403 when another owner's.
func (h *API) loadDefinition(w http.ResponseWriter, r *http.Request, c *caller, version int) (store.Definition, bool) {
	name := r.PathValue("name")
	if !store.ValidDefinitionName(name) {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_definition_name", "a definition name is 1 to 128 bytes of text without control characters or '/'")
		return store.Definition{}, false
	}
	d, err := h.jobs.Definition(r.Context(), name, version)
	return d, h.checkOwned(w, r, c, "definition", d.Owner, err, "no definition "+jobs.Truncate(name, 64)+versionText(version))
}

// loadPathDefinition is loadDefinition of the version in the path (see
// pathVersion, which answers a bad one).
func (h *API) loadPathDefinition(w http.ResponseWriter, r *http.Request, c *caller) (store.Definition, bool) {
	version, ok := pathVersion(w, r)
	if !ok {
		return store.Definition{}, false
	}
	return h.loadDefinition(w, r, c, version)
}

func versionText(v int) string {
	if v == 0 {
		return ""
	}
	return " version " + strconv.Itoa(v)
}

// pathVersion reads the {version} path value or ?version= (absent: 0,
// the newest).
func pathVersion(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.PathValue("version")
	if s == "" {
		s = r.URL.Query().Get("version")
	}
	if s == "" {
		return 0, true
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "a definition version is a positive integer")
		return 0, false
	}
	return v, true
}

func (h *API) serveDefinitions(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	owner := c.claims.Subject
	if c.admin {
		owner = ""
	}
	ds, err := h.jobs.Definitions(r.Context(), owner)
	if err != nil {
		h.storeError(w, r, "list definitions", err)
		return
	}
	out := make([]jsonDefinition, 0, len(ds))
	for _, d := range ds {
		out = append(out, h.definitionDoc(d))
	}
	writeJSON(w, struct {
		Definitions []jsonDefinition `json:"definitions"`
	}{out})
}

func (h *API) serveDefinition(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	d, ok := h.loadPathDefinition(w, r, c)
	if !ok {
		return
	}
	h.writeDefinition(w, r, d, http.StatusOK)
}

// writeDefinition answers a definition's document, with its versions.
func (h *API) writeDefinition(w http.ResponseWriter, r *http.Request, d store.Definition, status int) {
	vs, err := h.jobs.DefinitionVersions(r.Context(), d.Name)
	if err != nil {
		h.storeError(w, r, "read definition versions", err)
		return
	}
	doc := h.definitionDoc(d)
	doc.Spec = d.Spec
	for _, v := range vs {
		doc.Versions = append(doc.Versions, jsonDefinitionVersion{v.Version, formatTime(v.CreatedAt)})
	}
	var b bytes.Buffer
	json.NewEncoder(&b).Encode(doc)
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// servePutDefinition stores the JSON body (definitionSpec) as the next
// version of the name: 201 with the definition's document.
func (h *API) servePutDefinition(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, true)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if !store.ValidDefinitionName(name) {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_definition_name", "a definition name is 1 to 128 bytes of text without control characters or '/'")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is above 1 MiB")
		return
	}
	var spec definitionSpec
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_json", "the body is not a definition: "+err.Error())
		return
	}
	switch {
	case len(spec.Steps) > 0:
		if spec.Action != "" || spec.Targets != "" || len(spec.Parameters) > 0 || spec.Require != "" {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_definition", "a definition with steps gives action, targets, require and parameters in each step")
			return
		}
		for i, s := range spec.Steps {
			if s.Action == "" || strings.TrimSpace(s.Targets) == "" {
				apierr.WriteNew(w, http.StatusBadRequest, "invalid_definition", "step "+strconv.Itoa(i+1)+" needs action and targets")
				return
			}
		}
	case spec.Action == "" || strings.TrimSpace(spec.Targets) == "":
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_definition", "a definition needs action and targets, or steps")
		return
	}
	owner := c.claims.Subject
	switch prev, err := h.jobs.Definition(r.Context(), name, 0); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		h.storeError(w, r, "read definition", err)
		return
	case !c.admin && prev.Owner != c.claims.Subject:
		apierr.WriteNew(w, http.StatusForbidden, "definition_forbidden", "this definition belongs to another owner")
		return
	default:
		owner = prev.Owner // an admin's change keeps the owner
	}
	canonical, _ := json.Marshal(spec)
	d, err := h.jobs.SaveDefinition(r.Context(), store.Definition{Name: name, Owner: owner, Spec: canonical})
	if err != nil {
		h.storeError(w, r, "save definition", err)
		return
	}
	w.Header().Set("Location", h.definitionURL(name))
	h.writeDefinition(w, r, d, http.StatusCreated)
}

// serveRunDefinition starts a job from a version of a definition: the
// request is a job creation (form or JSON, as POST /api/v1/jobs) whose
// parameters replace the definition's of the same name (one value or
// several), whose labels are added to the definition's, and which may set
// RUNID, PHASE=RUN, DESTRUCTION, EXECUTIONDURATION, TARGETS and REQUIRE;
// ACTION cannot change.
func (h *API) serveRunDefinition(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, true)
	if !ok {
		return
	}
	d, ok := h.loadPathDefinition(w, r, c)
	if !ok {
		return
	}
	over, ok := h.readCreate(w, r)
	if !ok {
		return
	}
	var spec definitionSpec
	if err := json.Unmarshal(d.Spec, &spec); err != nil {
		h.log.Error("jobs: a stored definition does not parse", "definition", d.Name, "version", d.Version, "err", err)
		apierr.WriteNew(w, http.StatusConflict, "definition_unreadable", "the stored definition cannot be read")
		return
	}
	if len(spec.Steps) > 0 {
		req, err := overrideSteps(spec, over)
		if err != nil {
			h.answerError(w, r, err)
			return
		}
		h.create(w, r, c, req, d)
		return
	}
	if over.Action != "" && over.Action != spec.Action {
		apierr.WriteNew(w, http.StatusBadRequest, "invalid_parameter", "ACTION is the definition's ("+spec.Action+"): store a new definition to change it")
		return
	}
	req := over
	req.Action = spec.Action
	if req.Targets == "" {
		req.Targets = spec.Targets
	}
	if req.Require == "" {
		req.Require = spec.Require
	}
	if req.ExecutionDuration == nil {
		req.ExecutionDuration = spec.ExecutionDuration
	}
	req.Parameters = maps.Clone(spec.Parameters)
	if req.Parameters == nil {
		req.Parameters = map[string]paramValues{}
	}
	for k, v := range over.Parameters {
		for old := range req.Parameters {
			if strings.EqualFold(old, k) {
				delete(req.Parameters, old)
			}
		}
		req.Parameters[k] = v
	}
	req.Labels = append(append([]string(nil), spec.Labels...), over.Labels...)
	h.create(w, r, c, req, d)
}

// overrideSteps is the creation of a job from a definition with steps
// and the request over: over may set RUNID, PHASE=RUN, DESTRUCTION,
// EXECUTIONDURATION and labels (added), and parameters named
// STEP.PARAMETER, each replacing that step's parameter; not ACTION,
// TARGETS, REQUIRE or steps.
func overrideSteps(spec definitionSpec, over createRequest) (createRequest, error) {
	if over.Action != "" || over.Targets != "" || over.Require != "" || len(over.Steps) > 0 {
		return over, &paramError{"action", "a definition with steps takes its actions, targets and steps as stored: store a new definition to change them"}
	}
	req := over
	if req.ExecutionDuration == nil {
		req.ExecutionDuration = spec.ExecutionDuration
	}
	req.Parameters = nil
	req.Steps = make([]stepRequest, len(spec.Steps))
	for i, s := range spec.Steps {
		s.Parameters = maps.Clone(s.Parameters)
		if s.Parameters == nil {
			s.Parameters = map[string]paramValues{}
		}
		req.Steps[i] = s
	}
	for k, v := range over.Parameters {
		step, name, ok := strings.Cut(k, ".")
		i := slices.IndexFunc(req.Steps, func(s stepRequest) bool { return strings.EqualFold(s.Name, step) })
		if !ok || i < 0 {
			return over, &paramError{k, "a definition with steps takes parameters as STEP.PARAMETER, STEP one of its steps"}
		}
		for old := range req.Steps[i].Parameters {
			if strings.EqualFold(old, name) {
				delete(req.Steps[i].Parameters, old)
			}
		}
		req.Steps[i].Parameters[name] = v
	}
	req.Labels = append(append([]string(nil), spec.Labels...), over.Labels...)
	return req, nil
}

// serveDefinitionJobs lists the jobs started from a definition (any
// version), with the job list's other filters.
func (h *API) serveDefinitionJobs(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, false)
	if !ok {
		return
	}
	d, ok := h.loadDefinition(w, r, c, 0)
	if !ok {
		return
	}
	q, err := formParams(r)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	delete(q, "definition")
	js, ok := h.listJobs(w, r, c, q, func(f *store.JobFilter) { f.Definition = d.Name })
	if !ok {
		return
	}
	writeJobList(w, wantsXML(r), js, h.base)
}
