package sqlite

// The JSON text columns of the jobs, runs and agents tables. The same
// formats are used by both backends (keep this file in step with the other
// backend's jobcodec.go):
//   - jobs.params: a JSON object of strings, "{}" when empty;
//   - jobs.agents, agents.labels: a JSON array of strings, "[]" when empty;
//   - runs.files: a JSON array of {"name","size","sha256","path"} objects,
//     "[]" when empty;
//   - runs.metrics, agents.actions: the caller's JSON text byte for byte,
//     NULL when empty.
//
// Decoding returns nil for an empty object or array, so an empty map or
// slice comes back nil.

import (
	"encoding/json"
	"fmt"
	"time"

	"switchboard/internal/store"
)

// storedTime returns t as stored: UTC, truncated to microseconds.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// durationMicros returns d in whole microseconds, as exec_duration stores
// it.
func durationMicros(d time.Duration) int64 { return d.Microseconds() }

// fromDurationMicros is the inverse of durationMicros.
func fromDurationMicros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// encodeParams encodes job parameters.
func encodeParams(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode params: %w", err)
	}
	return string(b), nil
}

// decodeParams decodes what encodeParams stored; empty is nil.
func decodeParams(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decode params: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// encodeStrings encodes a list of strings (job agents, agent labels).
func encodeStrings(ss []string) (string, error) {
	if len(ss) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(ss)
	if err != nil {
		return "", fmt.Errorf("encode strings: %w", err)
	}
	return string(b), nil
}

// decodeStrings decodes what encodeStrings stored; empty is nil.
func decodeStrings(s string) ([]string, error) {
	var ss []string
	if err := json.Unmarshal([]byte(s), &ss); err != nil {
		return nil, fmt.Errorf("decode strings: %w", err)
	}
	if len(ss) == 0 {
		return nil, nil
	}
	return ss, nil
}

// file is the stored form of a store.ResultFile, with names of its own so
// that renaming Go fields does not change the format.
type file struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Path   string `json:"path"`
}

// encodeFiles encodes the result files of a run.
func encodeFiles(fs []store.ResultFile) (string, error) {
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

// decodeFiles decodes what encodeFiles stored; empty is nil.
func decodeFiles(s string) ([]store.ResultFile, error) {
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

// encodeRaw returns JSON text to store as given, or nil (NULL) when empty.
// Validate it first (store.Run.Validate, store.Agent.Validate).
func encodeRaw(m json.RawMessage) *string {
	if len(m) == 0 {
		return nil
	}
	s := string(m)
	return &s
}

// decodeRaw is the inverse of encodeRaw.
func decodeRaw(s *string) json.RawMessage {
	if s == nil || *s == "" {
		return nil
	}
	return json.RawMessage(*s)
}

// encodedJob holds the encoded JSON columns of a job.
type encodedJob struct {
	Params, Agents string
}

// encodeJob validates j and encodes its JSON columns.
func encodeJob(j store.Job) (encodedJob, error) {
	if err := j.Validate(); err != nil {
		return encodedJob{}, err
	}
	var (
		e   encodedJob
		err error
	)
	if e.Params, err = encodeParams(j.Params); err != nil {
		return encodedJob{}, fmt.Errorf("store: job %q: %w", j.ID, err)
	}
	if e.Agents, err = encodeStrings(j.Agents); err != nil {
		return encodedJob{}, fmt.Errorf("store: job %q: %w", j.ID, err)
	}
	return e, nil
}

// normalizeJob returns j as the store returns it after writing it: times in
// UTC truncated to microseconds, ExecDuration truncated to microseconds,
// empty maps and slices nil. The store sets UpdatedAt itself.
func normalizeJob(j store.Job) store.Job {
	for _, t := range []*time.Time{&j.CreatedAt, &j.StartedAt, &j.EndedAt, &j.Quote, &j.Destruction, &j.UpdatedAt} {
		*t = storedTime(*t)
	}
	j.ExecDuration = fromDurationMicros(durationMicros(j.ExecDuration))
	if len(j.Params) == 0 {
		j.Params = nil
	}
	if len(j.Agents) == 0 {
		j.Agents = nil
	}
	return j
}
