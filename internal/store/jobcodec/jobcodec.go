// Package jobcodec encodes the JSON text columns of the jobs, runs and
// agents tables, the same way for both backends (store/sqlite and
// store/postgres):
//   - jobs.params: a JSON object of strings, "{}" when empty;
//   - jobs.agents, jobs.labels, agents.labels: a JSON array of strings,
//     "[]" when empty;
//   - jobs.matrix: a JSON array of {"name","values"} objects, "[]" when
//     empty;
//   - runs.files: a JSON array of {"name","size","sha256","path"} objects,
//     "[]" when empty;
//   - runs.metrics, agents.actions: the caller's JSON text byte for byte,
//     NULL when empty.
//
// Decoding returns nil for an empty object or array, so an empty map or
// slice comes back nil.
package jobcodec

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// StoredTime returns t as stored: UTC, truncated to microseconds.
func StoredTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// DurationMicros returns d in whole microseconds, as exec_duration stores
// it.
func DurationMicros(d time.Duration) int64 { return d.Microseconds() }

// FromDurationMicros is the inverse of DurationMicros.
func FromDurationMicros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// EncodeParams encodes job parameters.
func EncodeParams(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode params: %w", err)
	}
	return string(b), nil
}

// DecodeParams decodes what EncodeParams stored; empty is nil.
func DecodeParams(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decode params: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// EncodeStrings encodes a list of strings (job agents, agent labels).
func EncodeStrings(ss []string) (string, error) {
	if len(ss) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(ss)
	if err != nil {
		return "", fmt.Errorf("encode strings: %w", err)
	}
	return string(b), nil
}

// DecodeStrings decodes what EncodeStrings stored; empty is nil.
func DecodeStrings(s string) ([]string, error) {
	var ss []string
	if err := json.Unmarshal([]byte(s), &ss); err != nil {
		return nil, fmt.Errorf("decode strings: %w", err)
	}
	if len(ss) == 0 {
		return nil, nil
	}
	return ss, nil
}

// matrixParam is the stored form of a store.MatrixParam.
type matrixParam struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// EncodeMatrix encodes a matrix job's parameters.
func EncodeMatrix(ps []store.MatrixParam) (string, error) {
	if len(ps) == 0 {
		return "[]", nil
	}
	out := make([]matrixParam, len(ps))
	for i, p := range ps {
		out[i] = matrixParam(p)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode matrix: %w", err)
	}
	return string(b), nil
}

// DecodeMatrix decodes what EncodeMatrix stored; empty is nil.
func DecodeMatrix(s string) ([]store.MatrixParam, error) {
	var in []matrixParam
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("decode matrix: %w", err)
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]store.MatrixParam, len(in))
	for i, p := range in {
		out[i] = store.MatrixParam(p)
	}
	return out, nil
}

// step is the stored form of a store.Step.
type step struct {
	Name  string `json:"name"`
	Job   string `json:"job"`
	After string `json:"after,omitempty"`
	When  string `json:"when,omitempty"`
}

// stepsColumn is the stored form of a job's steps. A job has steps or a
// matrix, never both, so they share the matrix column: an array there
// is a matrix, an object {"steps": […]} the steps (no schema change).
type stepsColumn struct {
	Steps []step `json:"steps"`
}

// EncodeSteps encodes a job's steps for the matrix column.
func EncodeSteps(ss []store.Step) (string, error) {
	out := stepsColumn{Steps: make([]step, len(ss))}
	for i, s := range ss {
		out.Steps[i] = step(s)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode steps: %w", err)
	}
	return string(b), nil
}

// decodeMatrixColumn decodes the matrix column: a matrix (an array) or
// steps (an object, EncodeSteps).
func decodeMatrixColumn(s string) ([]store.MatrixParam, []store.Step, error) {
	if t := strings.TrimSpace(s); !strings.HasPrefix(t, "{") {
		m, err := DecodeMatrix(s)
		return m, nil, err
	}
	var in stepsColumn
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, nil, fmt.Errorf("decode steps: %w", err)
	}
	if len(in.Steps) == 0 {
		return nil, nil, nil
	}
	out := make([]store.Step, len(in.Steps))
	for i, st := range in.Steps {
		out[i] = store.Step(st)
	}
	return nil, out, nil
}

// file is the stored form of a store.ResultFile, with names of its own so
// that renaming Go fields does not change the format.
type file struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Path   string `json:"path"`
}

// EncodeFiles encodes the result files of a run.
func EncodeFiles(fs []store.ResultFile) (string, error) {
	if len(fs) == 0 {
		return "[]", nil
	}
	out := make([]file, len(fs))
	for i, f := range fs {
		out[i] = file(f)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode files: %w", err)
	}
	return string(b), nil
}

// DecodeFiles decodes what EncodeFiles stored; empty is nil.
func DecodeFiles(s string) ([]store.ResultFile, error) {
	var in []file
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("decode files: %w", err)
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]store.ResultFile, len(in))
	for i, f := range in {
		out[i] = store.ResultFile(f)
	}
	return out, nil
}

// EncodeRaw returns JSON text to store as given, or nil (NULL) when empty.
// Validate it first (store.Run.Validate, store.Agent.Validate).
func EncodeRaw(m json.RawMessage) *string {
	if len(m) == 0 {
		return nil
	}
	s := string(m)
	return &s
}

// DecodeRaw is the inverse of EncodeRaw.
func DecodeRaw(s *string) json.RawMessage {
	if s == nil || *s == "" {
		return nil
	}
	return json.RawMessage(*s)
}

// EncodedJob holds the encoded JSON columns of a job.
type EncodedJob struct {
	Params, Agents, Matrix, Labels string
}

// EncodeJob validates j and encodes its JSON columns.
func EncodeJob(j store.Job) (EncodedJob, error) {
	if err := j.Validate(); err != nil {
		return EncodedJob{}, err
	}
	var (
		e   EncodedJob
		err error
	)
	if e.Params, err = EncodeParams(j.Params); err != nil {
		return EncodedJob{}, fmt.Errorf("store: job %q: %w", j.ID, err)
	}
	if e.Agents, err = EncodeStrings(j.Agents); err != nil {
		return EncodedJob{}, fmt.Errorf("store: job %q: %w", j.ID, err)
	}
	if len(j.Steps) > 0 {
		e.Matrix, err = EncodeSteps(j.Steps)
	} else {
		e.Matrix, err = EncodeMatrix(j.Matrix)
	}
	if err != nil {
		return EncodedJob{}, fmt.Errorf("store: job %q: %w", j.ID, err)
	}
	if e.Labels, err = EncodeStrings(j.Labels); err != nil {
		return EncodedJob{}, fmt.Errorf("store: job %q: %w", j.ID, err)
	}
	return e, nil
}

// PrepareJob validates j for storing at now and returns it as the store
// will read it back (UpdatedAt now, CreatedAt now if zero, normalised) with
// its encoded JSON columns.
func PrepareJob(j store.Job, now time.Time) (store.Job, EncodedJob, error) {
	enc, err := EncodeJob(j)
	if err != nil {
		return store.Job{}, enc, err
	}
	if j.CreatedAt.IsZero() {
		j.CreatedAt = now
	}
	j.UpdatedAt = now
	return NormalizeJob(j), enc, nil
}

// DecodeJobColumns fills j's Params, Agents, Matrix and Labels from their
// stored JSON.
func DecodeJobColumns(j *store.Job, params, agents, matrix, labels string) error {
	var err error
	if j.Matrix, j.Steps, err = decodeMatrixColumn(matrix); err != nil {
		return fmt.Errorf("job %q: %w", j.ID, err)
	}
	if j.Labels, err = DecodeStrings(labels); err != nil {
		return fmt.Errorf("job %q: %w", j.ID, err)
	}
	if j.Params, err = DecodeParams(params); err != nil {
		return fmt.Errorf("job %q: %w", j.ID, err)
	}
	if j.Agents, err = DecodeStrings(agents); err != nil {
		return fmt.Errorf("job %q: %w", j.ID, err)
	}
	return nil
}

// NormalizeJob returns j as the store returns it after writing it: times in
// UTC truncated to microseconds, ExecDuration truncated to microseconds,
// empty maps and slices nil. The store sets UpdatedAt itself.
func NormalizeJob(j store.Job) store.Job {
	for _, t := range []*time.Time{&j.CreatedAt, &j.StartedAt, &j.EndedAt, &j.Quote, &j.Destruction, &j.UpdatedAt} {
		*t = StoredTime(*t)
	}
	j.ExecDuration = FromDurationMicros(DurationMicros(j.ExecDuration))
	if len(j.Params) == 0 {
		j.Params = nil
	}
	if len(j.Agents) == 0 {
		j.Agents = nil
	}
	if len(j.Matrix) == 0 {
		j.Matrix = nil
	}
	if len(j.Steps) == 0 {
		j.Steps = nil
	}
	if len(j.Labels) == 0 {
		j.Labels = nil
	}
	return j
}

// UnfinishedStatesSQL is store.UnfinishedRunStates as an SQL list of
// string literals, for `state IN (…)` (the states are plain words: nothing
// to escape).
var UnfinishedStatesSQL = func() string {
	var b strings.Builder
	for i, s := range store.UnfinishedRunStates {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + string(s) + "'")
	}
	return b.String()
}()
