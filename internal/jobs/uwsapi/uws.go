package uwsapi

// UWS 1.1 representations (XML and JSON) of jobs, job lists, results and
// parameters, the CSV summary result, and the parsing of UWS request
// parameters. Everything here is a pure function of its arguments; the
// HTTP handlers call it.

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// XML namespaces of the documents.
const (
	nsUWS   = "http://www.ivoa.net/xml/UWS/v1.0"
	nsXLink = "http://www.w3.org/1999/xlink"
	nsXSI   = "http://www.w3.org/2001/XMLSchema-instance"
	// nsJobInfo is our own namespace for the content of <uws:jobInfo>.
	nsJobInfo = "urn:switchboard:jobs"

	uwsVersion = "1.1"

	contentTypeXML  = "application/xml; charset=utf-8"
	contentTypeJSON = "application/json"

	// timeLayout is how every instant is shown: RFC 3339 in UTC with
	// milliseconds, a valid xs:dateTime.
	timeLayout = "2006-01-02T15:04:05.000Z"
)

// Limits of request parameters.
const (
	maxLast              = 10000
	maxExecutionDuration = 365 * 24 * time.Hour
	maxFormBody          = 1 << 20 // bytes of a POST body read by formParams
)

// errBodyTooLarge is returned (wrapped) by formParams when the request
// body is above maxFormBody: the caller answers 413.
var errBodyTooLarge = errors.New("request body too large")

// paramError is an invalid request parameter: the handler answers 400 with
// code "invalid_parameter" and Error() as the message.
type paramError struct {
	Param   string // the UWS name, e.g. "WAIT"
	Message string // what is wrong and the accepted form
}

func (e *paramError) Error() string { return "invalid " + e.Param + ": " + e.Message }

// ---------------------------------------------------------------------------
// Content negotiation

// wantsXML reports whether the request gets UWS XML rather than JSON. UWS
// XML is the default, so that standard UWS clients (pyvo, TOPCAT, curl),
// which send no Accept header or */*, work unchanged; JSON is for clients
// that ask for it (the dashboard sends Accept: application/json).
//
// Each format's quality is that of the most specific range matching it
// (q-values honoured): application/xml or text/xml, then application/* or
// text/*, then */*; application/json, then application/*, then */*. XML
// wins when its quality is above JSON's, or equal unless application/json
// is named explicitly. A header with no valid entry counts as absent; one
// that refuses XML (q=0) gets JSON. Malformed entries are ignored.
func wantsXML(r *http.Request) bool {
	qXML, qJSON := -1.0, -1.0
	qAppAny, qTextAny, qAny := -1.0, -1.0, -1.0
	valid := false
	for _, h := range r.Header.Values("Accept") {
		for _, entry := range strings.Split(h, ",") {
			typ, q, ok := parseAcceptEntry(entry)
			if !ok {
				continue
			}
			valid = true
			switch typ {
			case "application/xml", "text/xml":
				qXML = max(qXML, q)
			case "application/json":
				qJSON = max(qJSON, q)
			case "application/*":
				qAppAny = max(qAppAny, q)
			case "text/*":
				qTextAny = max(qTextAny, q)
			case "*/*":
				qAny = max(qAny, q)
			}
		}
	}
	if !valid {
		return true
	}
	jsonNamed := qJSON >= 0
	// The most specific range that matches a format decides its quality.
	qXML = firstSet(qXML, max(qAppAny, qTextAny), qAny)
	qJSON = firstSet(qJSON, qAppAny, qAny)
	return qXML > 0 && (qXML > qJSON || (qXML == qJSON && !jsonNamed))
}

// firstSet returns the first quality that is set (not negative), else 0.
func firstSet(qs ...float64) float64 {
	for _, q := range qs {
		if q >= 0 {
			return q
		}
	}
	return 0
}

// parseAcceptEntry splits one media range of an Accept header into its
// lower-case type and its quality (1 when absent).
func parseAcceptEntry(entry string) (typ string, q float64, ok bool) {
	parts := strings.Split(entry, ";")
	typ = strings.ToLower(strings.TrimSpace(parts[0]))
	if typ == "" || strings.Count(typ, "/") != 1 {
		return "", 0, false
	}
	q = 1
	for _, p := range parts[1:] {
		k, v, found := strings.Cut(strings.TrimSpace(p), "=")
		if !found || !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
			return "", 0, false
		}
		q = f
	}
	return typ, q, true
}

// ---------------------------------------------------------------------------
// Shared pieces of the representations

// jobURL is the absolute URL of job id under the job list base.
func jobURL(base, id string) string { return base + "/" + url.PathEscape(id) }

// resultURL is the absolute URL of a result of a job: every segment of
// the result id ("summary", "{agent}/{file}") is escaped.
func resultURL(base, jobID, resultID string) string {
	segs := strings.Split(resultID, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return jobURL(base, jobID) + "/results/" + strings.Join(segs, "/")
}

// formatTime shows t as RFC 3339 UTC with milliseconds.
func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// jsonTime is a time for JSON: null when zero.
func jsonTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := formatTime(t)
	return &s
}

// jsonString is a string for JSON: null when empty.
func jsonString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// durationSeconds is d in whole seconds, clamped to an xs:int.
func durationSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if s < 0 {
		return 0
	}
	return min(s, math.MaxInt32)
}

// errorType is the UWS error type of a job: transient or fatal.
func errorType(j *store.Job) string {
	if j.ErrorType == "transient" {
		return "transient"
	}
	return "fatal"
}

// exitStatus returns the exit code of a run, if it has one: only a
// finished run with a non-negative code does.
func exitStatus(r *store.Run) (int, bool) {
	if !r.State.Final() || r.ExitCode < 0 {
		return 0, false
	}
	return r.ExitCode, true
}

// param is one job parameter as shown.
type param struct{ Name, Value string }

// params lists the parameters of a job as shown: action, targets, require
// (when not the default), then the action parameters sorted by name. An
// action parameter named action or targets (in any case) is left out: it
// could not be told apart from the job's own fields (request parameter
// names fold to lower case).
func params(j *store.Job) []param {
	out := make([]param, 0, 3+len(j.Params))
	out = append(out, param{"action", j.Action}, param{"targets", j.Targets})
	if j.Require != "" {
		out = append(out, param{"require", j.Require})
	}
	names := make([]string, 0, len(j.Params))
	for k := range j.Params {
		if lk := strings.ToLower(k); lk == "action" || lk == "targets" {
			continue
		}
		names = append(names, k)
	}
	for _, p := range j.Matrix {
		if lk := strings.ToLower(p.Name); lk != "action" && lk != "targets" {
			names = append(names, p.Name)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		if v, ok := j.Params[k]; ok {
			out = append(out, param{k, v})
			continue
		}
		// A matrix parameter: one entry per value, as a UWS client
		// gives it (the JSON rendering makes them one array).
		i := slices.IndexFunc(j.Matrix, func(p store.MatrixParam) bool { return p.Name == k })
		for _, v := range j.Matrix[i].Values {
			out = append(out, param{k, v})
		}
	}
	return out
}

// writeBody sends a finished document with status 200.
func writeBody(w http.ResponseWriter, asXML bool, body []byte) {
	h := w.Header()
	if asXML {
		h.Set("Content-Type", contentTypeXML)
	} else {
		h.Set("Content-Type", contentTypeJSON)
	}
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeJSON sends v as a JSON document with status 200. v only holds
// types that always encode (metrics are checked with json.Valid), so an
// error is a bug: 500.
func writeJSON(w http.ResponseWriter, v any) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		apierr.WriteNew(w, http.StatusInternalServerError, "internal", "cannot encode the document")
		return
	}
	writeBody(w, false, b.Bytes())
}

// ---------------------------------------------------------------------------
// XML writing

// xmlDoc builds an XML document. Element and attribute names are
// constants of this file; every value goes through xml.EscapeText, which
// also replaces characters XML cannot carry with U+FFFD.
type xmlDoc struct{ b bytes.Buffer }

func newXMLDoc() *xmlDoc {
	d := &xmlDoc{}
	d.b.WriteString(xml.Header)
	return d
}

// escape writes s escaped for text content or a double-quoted attribute.
func (d *xmlDoc) escape(s string) { _ = xml.EscapeText(&d.b, []byte(s)) }

// tag writes a start tag with attributes given as name, value pairs
// (see optional). Close it with end, or use empty=true for a
// self-closing element.
func (d *xmlDoc) tag(name string, empty bool, attrs ...string) {
	d.b.WriteByte('<')
	d.b.WriteString(name)
	for i := 0; i+1 < len(attrs); i += 2 {
		d.b.WriteByte(' ')
		d.b.WriteString(attrs[i])
		d.b.WriteString(`="`)
		d.escape(attrs[i+1])
		d.b.WriteByte('"')
	}
	if empty {
		d.b.WriteString("/>")
	} else {
		d.b.WriteByte('>')
	}
}

// optional returns the name, value pairs whose value is not empty.
func optional(pairs ...string) []string {
	var out []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			out = append(out, pairs[i], pairs[i+1])
		}
	}
	return out
}

func (d *xmlDoc) end(name string) {
	d.b.WriteString("</")
	d.b.WriteString(name)
	d.b.WriteByte('>')
}

func (d *xmlDoc) nl(indent int) {
	d.b.WriteByte('\n')
	for range indent {
		d.b.WriteString("  ")
	}
}

// text writes <name>value</name>.
func (d *xmlDoc) text(name, value string) {
	d.tag(name, false)
	d.escape(value)
	d.end(name)
}

// nillable writes <name>value</name>, or <name xsi:nil="true"/> when
// value is empty.
func (d *xmlDoc) nillable(name, value string) {
	if value == "" {
		d.tag(name, true, "xsi:nil", "true")
		return
	}
	d.text(name, value)
}

// nillableTime writes a time element, nil when t is zero.
func (d *xmlDoc) nillableTime(name string, t time.Time) {
	if t.IsZero() {
		d.nillable(name, "")
		return
	}
	d.text(name, formatTime(t))
}

// root opens the document element with the namespace declarations.
func (d *xmlDoc) root(name string, attrs ...string) {
	all := append([]string{"xmlns:uws", nsUWS, "xmlns:xlink", nsXLink, "xmlns:xsi", nsXSI}, attrs...)
	d.tag(name, false, all...)
}

func (d *xmlDoc) bytes() []byte {
	d.b.WriteByte('\n')
	return d.b.Bytes()
}

// parametersXML writes <uws:parameters>.
func (d *xmlDoc) parametersXML(j *store.Job, indent int, rootAttrs bool) {
	if rootAttrs {
		d.root("uws:parameters")
	} else {
		d.tag("uws:parameters", false)
	}
	ps := params(j)
	for _, p := range ps {
		d.nl(indent + 1)
		d.tag("uws:parameter", false, "id", p.Name)
		d.escape(p.Value)
		d.end("uws:parameter")
	}
	if len(ps) > 0 {
		d.nl(indent)
	}
	d.end("uws:parameters")
}

// resultsXML writes <uws:results>.
func (d *xmlDoc) resultsXML(v *jobView, indent int, rootAttrs bool) {
	if rootAttrs {
		d.root("uws:results")
	} else {
		d.tag("uws:results", false)
	}
	rs := v.results()
	for _, r := range rs {
		d.nl(indent + 1)
		size := ""
		if r.Size >= 0 {
			size = strconv.FormatInt(r.Size, 10)
		}
		d.tag("uws:result", true, append([]string{
			"id", r.ID,
			"xlink:href", resultURL(v.Base, v.Job.ID, r.ID)},
			optional("size", size, "mime-type", r.MimeType)...)...)
	}
	if len(rs) > 0 {
		d.nl(indent)
	}
	d.end("uws:results")
}

// jobXML is the UWS <uws:job> document of v.
func jobXML(v *jobView) []byte {
	j := &v.Job
	d := newXMLDoc()
	d.root("uws:job", "xmlns:sb", nsJobInfo, "version", uwsVersion)
	d.nl(1)
	d.text("uws:jobId", j.ID)
	if j.RunID != "" {
		d.nl(1)
		d.text("uws:runId", j.RunID)
	}
	d.nl(1)
	d.nillable("uws:ownerId", j.Owner)
	d.nl(1)
	d.text("uws:phase", string(j.Phase))
	d.nl(1)
	d.nillableTime("uws:quote", j.Quote)
	if !j.CreatedAt.IsZero() { // not nillable: left out
		d.nl(1)
		d.text("uws:creationTime", formatTime(j.CreatedAt))
	}
	d.nl(1)
	d.nillableTime("uws:startTime", j.StartedAt)
	d.nl(1)
	d.nillableTime("uws:endTime", j.EndedAt)
	d.nl(1)
	d.text("uws:executionDuration", strconv.FormatInt(durationSeconds(j.ExecDuration), 10))
	d.nl(1)
	d.nillableTime("uws:destruction", j.Destruction)
	d.nl(1)
	d.parametersXML(j, 1, false)
	d.nl(1)
	d.resultsXML(v, 1, false)
	if j.ErrorSummary != "" {
		d.nl(1)
		d.tag("uws:errorSummary", false, "type", errorType(j), "hasDetail", "true")
		d.nl(2)
		d.text("uws:message", j.ErrorSummary)
		d.nl(1)
		d.end("uws:errorSummary")
	}
	d.jobInfoXML(v, 1)
	d.nl(0)
	d.end("uws:job")
	return d.bytes()
}

// jobInfoXML writes <uws:jobInfo>, when the job has an error summary or
// runs: why the job failed (<sb:error>, the same text as the message of
// <uws:errorSummary>, for clients that show jobInfo) and each run
// (<sb:run> with its state, exit code, times and error as attributes, and
// as elements the output tails its agent sent, <sb:stdoutTail> and
// <sb:stderrTail>, and its metrics object as JSON, <sb:metrics>). The
// elements are in our namespace (nsJobInfo); the schema lets jobInfo hold
// anything. No element in it may share a local name with a UWS element:
// pyvo ignores namespaces, and an <sb:errorSummary> or <sb:message> would
// overwrite what it read of the job's.
//
// A test's structure (docs/jobs.md) is there too: <sb:label> per label,
// <sb:definition name= version=>, on a matrix job's child <sb:matrixJob>
// (its matrix job's id), and on a matrix job one <sb:combination job=
// phase= label=> per child with an <sb:value name=> per matrix parameter;
// its runs (its children's) carry name= (agent and combination) and job=
// (the child's id). A test of several steps has one <sb:step name= job=
// phase= action= targets= after= when=> per step, and is shown as a
// matrix job whose combinations are its steps' jobs; its runs carry step=.
func (d *xmlDoc) jobInfoXML(v *jobView, indent int) {
	j := &v.Job
	if len(v.Runs) == 0 && j.ErrorSummary == "" && v.Matrix == nil && len(j.Labels) == 0 && j.Definition == "" && j.Parent == "" {
		return
	}
	d.nl(indent)
	d.tag("uws:jobInfo", false)
	if j.ErrorSummary != "" {
		d.nl(indent + 1)
		d.text("sb:error", j.ErrorSummary)
	}
	for _, l := range j.Labels {
		d.nl(indent + 1)
		d.text("sb:label", l)
	}
	if j.Definition != "" {
		d.nl(indent + 1)
		d.tag("sb:definition", true, "name", j.Definition, "version", strconv.Itoa(j.DefinitionVersion))
	}
	if j.Parent != "" {
		d.nl(indent + 1)
		d.text("sb:matrixJob", j.Parent)
	}
	if v.Steps != nil {
		for i, s := range v.Steps.Steps {
			k := v.Steps.Jobs[i]
			d.nl(indent + 1)
			d.tag("sb:step", true, append([]string{"name", s.Name, "job", s.Job, "phase", string(k.Phase),
				"action", k.Action, "targets", k.Targets}, optional("after", s.After, "when", s.When)...)...)
		}
	}
	if v.Matrix != nil {
		for i, c := range v.Matrix.Combos {
			d.nl(indent + 1)
			d.tag("sb:combination", false, "job", c.JobID, "phase", string(v.Matrix.Children[i].Phase), "label", c.Label())
			for _, p := range c.Values {
				d.nl(indent + 2)
				d.tag("sb:value", false, "name", p.Name)
				d.escape(p.Values[0])
				d.end("sb:value")
			}
			d.nl(indent + 1)
			d.end("sb:combination")
		}
	}
	for i := range v.Runs {
		r := &v.Runs[i]
		exit := ""
		if c, ok := exitStatus(r); ok {
			exit = strconv.Itoa(c)
		}
		start, end := "", ""
		if !r.StartedAt.IsZero() {
			start = formatTime(r.StartedAt)
		}
		if !r.EndedAt.IsZero() {
			end = formatTime(r.EndedAt)
		}
		metrics := ""
		if len(r.Metrics) > 0 && json.Valid(r.Metrics) {
			metrics = string(r.Metrics)
		}
		attrs := []string{"agent", r.AgentID}
		if v.Matrix != nil {
			attrs = append(attrs, "name", v.runName(i), "job", r.JobID)
		}
		if s := v.runStep(i); s != "" {
			attrs = append(attrs, "step", s)
		}
		attrs = append(attrs, optional(
			"state", string(r.State),
			"exitCode", exit,
			"startTime", start,
			"endTime", end,
			"error", r.Error)...)
		d.nl(indent + 1)
		children := optional("sb:stdoutTail", r.Stdout, "sb:stderrTail", r.Stderr, "sb:metrics", metrics)
		if len(children) == 0 {
			d.tag("sb:run", true, attrs...)
			continue
		}
		d.tag("sb:run", false, attrs...)
		for k := 0; k+1 < len(children); k += 2 {
			d.nl(indent + 2)
			d.text(children[k], children[k+1])
		}
		d.nl(indent + 1)
		d.end("sb:run")
	}
	d.nl(indent)
	d.end("uws:jobInfo")
}

// ---------------------------------------------------------------------------
// JSON shapes

type jsonResult struct {
	ID       string `json:"id"`
	Href     string `json:"href"`
	Size     *int64 `json:"size"` // null: unknown
	MimeType string `json:"mimeType"`
}

type jsonErrorSummary struct {
	Type      string `json:"type"`
	HasDetail bool   `json:"hasDetail"`
	Message   string `json:"message"`
}

type jsonFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type jsonRun struct {
	Agent string `json:"agent"`
	// Name, Job and Combination are set on a matrix job's runs: the
	// run's agent and combination, the child job it belongs to, and the
	// combination's values.
	Name        string        `json:"name,omitempty"`
	Job         string        `json:"job,omitempty"`
	Combination orderedParams `json:"combination,omitempty"`
	// Step is set on a test of several steps' runs: the step's name.
	Step      string  `json:"step,omitempty"`
	State     string  `json:"state"`
	ExitCode  *int    `json:"exitCode"` // null: no exit status
	StartTime *string `json:"startTime"`
	EndTime   *string `json:"endTime"`
	Error     string  `json:"error"`
	// StdoutTail and StderrTail are the last output the agent sent with
	// its result (jobproto.MaxTailBytes each); the whole log is the
	// result logs/{agent}.txt.
	StdoutTail string          `json:"stdoutTail"`
	StderrTail string          `json:"stderrTail"`
	Metrics    json.RawMessage `json:"metrics"` // the object as reported, or null
	Files      []jsonFile      `json:"files"`
}

type jsonJobInfo struct {
	Runs         []jsonRun          `json:"runs"`
	Labels       []string           `json:"labels,omitempty"`
	Definition   *jsonDefinitionRef `json:"definition,omitempty"`
	MatrixJob    string             `json:"matrixJob,omitempty"` // on a matrix job's child: the matrix job
	Matrix       []jsonMatrixParam  `json:"matrix,omitempty"`
	Combinations []jsonCombination  `json:"combinations,omitempty"`
	// Steps lists a test of several steps' steps, in order.
	Steps []jsonStep `json:"steps,omitempty"`
}

type jsonStep struct {
	Name    string `json:"name"`
	Job     string `json:"job"`
	Phase   string `json:"phase"`
	Action  string `json:"action"`
	Targets string `json:"targets"`
	After   string `json:"after,omitempty"`
	When    string `json:"when,omitempty"`
}

type jsonDefinitionRef struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

type jsonMatrixParam struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

type jsonCombination struct {
	Job        string        `json:"job"`
	Label      string        `json:"label"`
	Phase      string        `json:"phase"`
	Parameters orderedParams `json:"parameters"`
}

type jsonJob struct {
	JobID             string            `json:"jobId"`
	RunID             *string           `json:"runId"`
	OwnerID           *string           `json:"ownerId"`
	Phase             string            `json:"phase"`
	Quote             *string           `json:"quote"`
	CreationTime      *string           `json:"creationTime"`
	StartTime         *string           `json:"startTime"`
	EndTime           *string           `json:"endTime"`
	ExecutionDuration int64             `json:"executionDuration"`
	Destruction       *string           `json:"destruction"`
	Parameters        orderedParams     `json:"parameters"`
	Results           []jsonResult      `json:"results"`
	ErrorSummary      *jsonErrorSummary `json:"errorSummary,omitempty"`
	JobInfo           jsonJobInfo       `json:"jobInfo"`
}

type jsonJobRef struct {
	JobID        string  `json:"jobId"`
	Href         string  `json:"href"`
	Phase        string  `json:"phase"`
	RunID        *string `json:"runId"`
	OwnerID      *string `json:"ownerId"`
	CreationTime *string `json:"creationTime"`
	// Besides UWS's jobref (JSON only, for lists one can read at a
	// glance): the action, its targets as given, the times, the error.
	Action       *string `json:"action"`
	Targets      *string `json:"targets"`
	StartTime    *string `json:"startTime"`
	EndTime      *string `json:"endTime"`
	ErrorSummary *string `json:"errorSummary"`
}

// orderedParams encodes as a JSON object keeping its order.
type orderedParams []param

// Consecutive entries of one name (a matrix parameter's values) are one
// member whose value is an array of them.
func (p orderedParams) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := 0; i < len(p); {
		n := 1
		for i+n < len(p) && p[i+n].Name == p[i].Name {
			n++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(p[i].Name)
		if err != nil {
			return nil, err
		}
		var v []byte
		if n == 1 {
			v, err = json.Marshal(p[i].Value)
		} else {
			vs := make([]string, n)
			for j := range vs {
				vs[j] = p[i+j].Value
			}
			v, err = json.Marshal(vs)
		}
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
		i += n
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func resultsJSON(v *jobView) []jsonResult {
	out := []jsonResult{}
	for _, r := range v.results() {
		jr := jsonResult{ID: r.ID, Href: resultURL(v.Base, v.Job.ID, r.ID), MimeType: r.MimeType}
		if r.Size >= 0 {
			size := r.Size
			jr.Size = &size
		}
		out = append(out, jr)
	}
	return out
}

func runJSON(r *store.Run) jsonRun {
	jr := jsonRun{
		Agent:      r.AgentID,
		State:      string(r.State),
		StartTime:  jsonTime(r.StartedAt),
		EndTime:    jsonTime(r.EndedAt),
		Error:      r.Error,
		Files:      []jsonFile{},
		StdoutTail: r.Stdout,
		StderrTail: r.Stderr,
	}
	if c, ok := exitStatus(r); ok {
		jr.ExitCode = &c
	}
	if len(r.Metrics) > 0 && json.Valid(r.Metrics) {
		jr.Metrics = r.Metrics
	}
	for _, f := range r.Files {
		jr.Files = append(jr.Files, jsonFile{Name: f.Name, Size: f.Size, SHA256: f.SHA256})
	}
	return jr
}

func jobJSON(v *jobView) jsonJob {
	j := &v.Job
	doc := jsonJob{
		JobID:             j.ID,
		RunID:             jsonString(j.RunID),
		OwnerID:           jsonString(j.Owner),
		Phase:             string(j.Phase),
		Quote:             jsonTime(j.Quote),
		CreationTime:      jsonTime(j.CreatedAt),
		StartTime:         jsonTime(j.StartedAt),
		EndTime:           jsonTime(j.EndedAt),
		ExecutionDuration: durationSeconds(j.ExecDuration),
		Destruction:       jsonTime(j.Destruction),
		Parameters:        params(j),
		Results:           resultsJSON(v),
		JobInfo:           jsonJobInfo{Runs: []jsonRun{}},
	}
	if j.ErrorSummary != "" {
		doc.ErrorSummary = &jsonErrorSummary{Type: errorType(j), HasDetail: true, Message: j.ErrorSummary}
	}
	for i := range v.Runs {
		jr := runJSON(&v.Runs[i])
		if v.Matrix != nil {
			jr.Name, jr.Job = v.runName(i), v.Runs[i].JobID
			jr.Combination = comboParams(v.Matrix.Combos[v.Matrix.RunCombo[i]])
			jr.Step = v.runStep(i)
		}
		doc.JobInfo.Runs = append(doc.JobInfo.Runs, jr)
	}
	doc.JobInfo.Labels = j.Labels
	if j.Definition != "" {
		doc.JobInfo.Definition = &jsonDefinitionRef{j.Definition, j.DefinitionVersion}
	}
	doc.JobInfo.MatrixJob = j.Parent
	for _, p := range j.Matrix {
		doc.JobInfo.Matrix = append(doc.JobInfo.Matrix, jsonMatrixParam{p.Name, p.Values})
	}
	if v.Matrix != nil {
		for i, c := range v.Matrix.Combos {
			doc.JobInfo.Combinations = append(doc.JobInfo.Combinations, jsonCombination{Job: c.JobID, Label: c.Label(),
				Phase: string(v.Matrix.Children[i].Phase), Parameters: comboParams(c)})
		}
	}
	if v.Steps != nil {
		for i, s := range v.Steps.Steps {
			k := v.Steps.Jobs[i]
			doc.JobInfo.Steps = append(doc.JobInfo.Steps, jsonStep{Name: s.Name, Job: s.Job, Phase: string(k.Phase),
				Action: k.Action, Targets: k.Targets, After: s.After, When: s.When})
		}
	}
	return doc
}

// ---------------------------------------------------------------------------
// The documents

// writeJob writes the job document (UWS <uws:job> with version="1.1", or
// JSON) with status 200.
func writeJob(w http.ResponseWriter, asXML bool, v *jobView) {
	if asXML {
		writeBody(w, true, jobXML(v))
		return
	}
	writeJSON(w, jobJSON(v))
}

// writeJobList writes <uws:jobs version="1.1"> with <uws:jobref id=
// xlink:href=> (phase, runId, ownerId, creationTime) or JSON
// {"jobs":[{"jobId","href","phase","runId","ownerId","creationTime"}]}.
func writeJobList(w http.ResponseWriter, asXML bool, jobs []store.Job, base string) {
	if !asXML {
		refs := make([]jsonJobRef, 0, len(jobs))
		for i := range jobs {
			j := &jobs[i]
			refs = append(refs, jsonJobRef{
				JobID:        j.ID,
				Href:         jobURL(base, j.ID),
				Phase:        string(j.Phase),
				RunID:        jsonString(j.RunID),
				OwnerID:      jsonString(j.Owner),
				CreationTime: jsonTime(j.CreatedAt),
				Action:       jsonString(j.Action),
				Targets:      jsonString(j.Targets),
				StartTime:    jsonTime(j.StartedAt),
				EndTime:      jsonTime(j.EndedAt),
				ErrorSummary: jsonString(j.ErrorSummary),
			})
		}
		writeJSON(w, struct {
			Jobs []jsonJobRef `json:"jobs"`
		}{refs})
		return
	}
	d := newXMLDoc()
	d.root("uws:jobs", "version", uwsVersion)
	for i := range jobs {
		j := &jobs[i]
		d.nl(1)
		d.tag("uws:jobref", false, "id", j.ID, "xlink:href", jobURL(base, j.ID))
		d.nl(2)
		d.text("uws:phase", string(j.Phase))
		if j.RunID != "" {
			d.nl(2)
			d.text("uws:runId", j.RunID)
		}
		d.nl(2)
		d.nillable("uws:ownerId", j.Owner)
		if !j.CreatedAt.IsZero() {
			d.nl(2)
			d.text("uws:creationTime", formatTime(j.CreatedAt))
		}
		d.nl(1)
		d.end("uws:jobref")
	}
	d.nl(0)
	d.end("uws:jobs")
	writeBody(w, true, d.bytes())
}

// writeResults writes <uws:results> (each <uws:result id= xlink:href=
// size= mime-type=>; size omitted when -1) or JSON
// {"results":[{"id","href","size","mimeType"}]} (size null when unknown).
func writeResults(w http.ResponseWriter, asXML bool, v *jobView) {
	if !asXML {
		writeJSON(w, struct {
			Results []jsonResult `json:"results"`
		}{resultsJSON(v)})
		return
	}
	d := newXMLDoc()
	d.resultsXML(v, 0, true)
	writeBody(w, true, d.bytes())
}

// writeParameters writes <uws:parameters> (each <uws:parameter
// id=name>value</uws:parameter>) or JSON {"parameters":{name:value}}. The
// parameters shown are: action, targets, then the job's Params sorted by
// name.
func writeParameters(w http.ResponseWriter, asXML bool, v *jobView) {
	if !asXML {
		writeJSON(w, struct {
			Parameters orderedParams `json:"parameters"`
		}{params(&v.Job)})
		return
	}
	d := newXMLDoc()
	d.parametersXML(&v.Job, 0, true)
	writeBody(w, true, d.bytes())
}

// ---------------------------------------------------------------------------
// The summary result

// writeSummaryCSV writes the summary result: header
// agent,state,exit_code,metric,value then one row per agent and metric.
// The metrics object is flattened: nested object keys joined with dots,
// array elements by index (a.0, a.1); numbers exactly as in the JSON,
// strings as is, booleans true/false, null as empty. Agents are ordered by
// AgentID, an object's keys by name, arrays by index. An agent without
// metrics (none, an empty object, or metrics that are not valid JSON) gets
// one row with empty metric and value. exit_code is empty while a run has
// no exit status.
//
// Spreadsheets run a cell that begins with = + - @ (or tab or CR, which
// they skip) as a formula, and agents choose their ids, metric names and
// string values: such text cells get a leading ' (csvText, the OWASP rule
// for CSV injection). Numbers stay numbers, negative ones too: exit_code
// and the values that are JSON numbers are written as they are (they
// cannot hold a formula).
func writeSummaryCSV(w io.Writer, runs []store.Run) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"agent", "state", "exit_code", "metric", "value"}); err != nil {
		return err
	}
	order := make([]int, len(runs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return runs[order[a]].AgentID < runs[order[b]].AgentID })
	for _, i := range order {
		r := &runs[i]
		exit := ""
		if c, ok := exitStatus(r); ok {
			exit = strconv.Itoa(c)
		}
		metrics := flattenMetrics(r.Metrics)
		if len(metrics) == 0 {
			metrics = []metric{{}}
		}
		for _, m := range metrics {
			value := m.Value
			if !m.Number {
				value = csvText(value)
			}
			if err := cw.Write([]string{csvText(r.AgentID), csvText(string(r.State)), exit, csvText(m.Name), value}); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvText makes a text cell inert in a spreadsheet: one that begins with
// a formula character (= + - @) or with tab or CR gets a leading '.
func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// metric is one flattened metric. Number is set when Value is a JSON
// number, written exactly as the agent sent it.
type metric struct {
	Name, Value string
	Number      bool
}

// flattenMetrics flattens a JSON value into metrics (see writeSummaryCSV).
// Invalid JSON gives none.
func flattenMetrics(raw json.RawMessage) []metric {
	if len(bytes.TrimSpace(raw)) == 0 || !json.Valid(raw) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out []metric
	if err := flattenValue(dec, "", true, &out); err != nil {
		return nil // cannot happen: raw is valid
	}
	return out
}

// flattenValue reads one JSON value from dec and appends its metrics under
// name (top: the value is the metrics object itself), named as
// metricname.go says.
func flattenValue(dec *json.Decoder, name string, top bool, out *[]metric) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			// Collect the members, then emit them sorted by key (stable:
			// duplicate keys keep their order).
			type member struct {
				key     string
				metrics []metric
			}
			var members []member
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key, ok := kt.(string)
				if !ok {
					return fmt.Errorf("object key %v", kt)
				}
				var sub []metric
				if err := flattenValue(dec, metricChildKey(name, key, top), false, &sub); err != nil {
					return err
				}
				members = append(members, member{key, sub})
			}
			if _, err := dec.Token(); err != nil { // '}'
				return err
			}
			slices.SortStableFunc(members, func(a, b member) int { return strings.Compare(a.key, b.key) })
			for _, m := range members {
				*out = append(*out, m.metrics...)
			}
		case '[':
			for i := 0; dec.More(); i++ {
				if err := flattenValue(dec, metricChildIndex(name, i), false, out); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil { // ']'
				return err
			}
		default:
			return fmt.Errorf("unexpected %v", t)
		}
	case json.Number:
		*out = append(*out, metric{Name: name, Value: t.String(), Number: true})
	case string:
		*out = append(*out, metric{Name: name, Value: t})
	case bool:
		*out = append(*out, metric{Name: name, Value: strconv.FormatBool(t)})
	case nil:
		*out = append(*out, metric{Name: name})
	default:
		return fmt.Errorf("unexpected token %T", tok)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Request parameters

// parseWait parses WAIT: integer seconds; -1 or more than maxWait →
// maxWait; other negative or non-integer values are an error. The caller
// only calls it when WAIT is present, so "" is an error too.
func parseWait(s string, maxWait time.Duration) (time.Duration, error) {
	const form = "must be a whole number of seconds ≥ 0, or -1 for the server's maximum"
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(s, "-") {
			return maxWait, nil // a huge wait: the cap
		}
		return 0, &paramError{"WAIT", form + ", got " + strconv.Quote(s)}
	}
	switch {
	case n == -1:
		return maxWait, nil
	case n < 0:
		return 0, &paramError{"WAIT", form + ", got " + strconv.Quote(s)}
	case n > int64(maxWait/time.Second):
		return maxWait, nil
	}
	return time.Duration(n) * time.Second, nil
}

// parseLast parses LAST: a positive integer ≤ 10000.
func parseLast(s string) (int, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLast {
		return 0, &paramError{"LAST", fmt.Sprintf("must be a whole number from 1 to %d, got %q", maxLast, s)}
	}
	return n, nil
}

// instantForm describes the accepted instants, for error messages.
const instantForm = "must be an ISO 8601 instant such as 2026-11-23T10:00:00Z, 2026-11-23T10:00:00.5+01:00, 2026-11-23T10:00:00 (UTC) or 2026-11-23 (midnight UTC)"

// parseInstant parses an ISO 8601 instant: RFC 3339 with or without a
// fraction of a second, the offset optional (UTC when absent), T or a
// space between date and time; or a date alone, midnight UTC. The result
// is in UTC, years 1 to 9999.
func parseInstant(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	// RFC 3339 allows lower-case t and z; the rest is digits and signs.
	s = strings.Map(func(r rune) rune {
		switch r {
		case 't':
			return 'T'
		case 'z':
			return 'Z'
		}
		return r
	}, s)
	layouts := []string{
		"2006-01-02T15:04:05Z07:00",
		"2006-01-02T15:04:05",
		"2006-01-02 15:04:05Z07:00",
		"2006-01-02 15:04:05",
		"2006-01-02",
	}
	for _, l := range layouts {
		t, err := time.Parse(l, s)
		if err != nil {
			continue
		}
		t = t.UTC()
		if y := t.Year(); y < 1 || y > 9999 {
			return time.Time{}, false
		}
		return t, true
	}
	return time.Time{}, false
}

// parseAfter parses AFTER: an ISO 8601 instant (see parseInstant).
func parseAfter(s string) (time.Time, error) {
	t, ok := parseInstant(s)
	if !ok {
		return time.Time{}, &paramError{"AFTER", instantForm + ", got " + strconv.Quote(s)}
	}
	return t, nil
}

// parseDestruction parses DESTRUCTION: an ISO 8601 instant (see
// parseInstant) not in the past (one second of slack).
func parseDestruction(s string, now time.Time) (time.Time, error) {
	t, ok := parseInstant(s)
	if !ok {
		return time.Time{}, &paramError{"DESTRUCTION", instantForm + ", got " + strconv.Quote(s)}
	}
	if t.Before(now.Add(-time.Second)) {
		return time.Time{}, &paramError{"DESTRUCTION", "must not be in the past, got " + formatTime(t)}
	}
	return t, nil
}

// parseExecutionDuration parses EXECUTIONDURATION: whole seconds from 0
// (unlimited) to one year.
func parseExecutionDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > int64(maxExecutionDuration/time.Second) {
		return 0, &paramError{"EXECUTIONDURATION", fmt.Sprintf(
			"must be a whole number of seconds from 0 (unlimited) to %d (one year), got %q",
			int64(maxExecutionDuration/time.Second), s)}
	}
	return time.Duration(n) * time.Second, nil
}

// parsePhases parses the PHASE values of a job list request: each a UWS
// phase name in any case; duplicates are removed, the first order kept.
func parsePhases(vals []string) ([]store.Phase, error) {
	var out []store.Phase
	for _, s := range vals {
		p := store.Phase(strings.ToUpper(strings.TrimSpace(s)))
		if !p.Valid() {
			names := make([]string, len(store.Phases))
			for i, q := range store.Phases {
				names[i] = string(q)
			}
			return nil, &paramError{"PHASE", "must be one of " + strings.Join(names, ", ") +
				" (repeat PHASE for several), got " + strconv.Quote(s)}
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// formParams returns all request parameters: the query string plus, for
// POST, the body if it is application/x-www-form-urlencoded or
// multipart/form-data (other bodies are left unread, as net/http does).
// Keys are folded to lower case so that UWS names match
// case-insensitively; values keep their order, query first. A body above
// 1 MiB gives an error wrapping errBodyTooLarge (and the
// *http.MaxBytesError): answer 413. A malformed query or body gives a
// *paramError. The request's Form fields are not touched.
func formParams(r *http.Request) (map[string][]string, error) {
	out := map[string][]string{}
	add := func(vals map[string][]string) {
		for k, vs := range vals {
			lk := strings.ToLower(k)
			out[lk] = append(out[lk], vs...)
		}
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &paramError{"query string", "is not valid URL encoding: " + err.Error()}
	}
	// Add in a fixed order so that repeated keys differing in case keep
	// a deterministic order.
	addSorted(q, add)
	if r.Method != http.MethodPost || r.Body == nil {
		return out, nil
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return out, nil
	}
	mt, mparams, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, &paramError{"Content-Type", "is malformed: " + err.Error()}
	}
	body := http.MaxBytesReader(nil, r.Body, maxFormBody)
	switch mt {
	case "application/x-www-form-urlencoded":
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, bodyError(err)
		}
		vals, err := url.ParseQuery(string(b))
		if err != nil {
			return nil, &paramError{"request body", "is not valid application/x-www-form-urlencoded: " + err.Error()}
		}
		addSorted(vals, add)
	case "multipart/form-data":
		boundary := mparams["boundary"]
		if boundary == "" {
			return nil, &paramError{"Content-Type", "multipart/form-data needs a boundary"}
		}
		mr := multipart.NewReader(body, boundary)
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, bodyError(err)
			}
			name := part.FormName()
			b, err := io.ReadAll(part)
			part.Close()
			if err != nil {
				return nil, bodyError(err)
			}
			if name == "" {
				continue
			}
			lk := strings.ToLower(name)
			out[lk] = append(out[lk], string(b))
		}
	}
	return out, nil
}

// addSorted passes vals to add one key at a time, keys sorted.
func addSorted(vals url.Values, add func(map[string][]string)) {
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(map[string][]string{k: vals[k]})
	}
}

// bodyError classifies an error reading a form body.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("%w: above %d bytes (%w)", errBodyTooLarge, mbe.Limit, mbe)
	}
	return &paramError{"request body", "is not a valid form: " + err.Error()}
}
