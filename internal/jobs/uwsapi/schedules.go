package uwsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// Schedules of saved definitions (docs/jobs.md, "Scheduling"):
//
//	GET    /api/v1/definitions/{name}/schedule   the schedule
//	PUT    /api/v1/definitions/{name}/schedule   set it: {"every","start","maxRunning"}
//	DELETE /api/v1/definitions/{name}/schedule   remove it
//
// The definition's owner (or jobs:admin) manages it; the scheduled jobs
// belong to the definition's owner. The hub starts them with runScheduled.

// scheduleRequest is the body of a PUT: every is a Go duration ("90m",
// "0s" or absent: once), start an ISO 8601 instant (absent: now),
// maxRunning how many of the definition's jobs may be unfinished when a
// firing comes (absent: 1).
type scheduleRequest struct {
	Every      string `json:"every"`
	Start      string `json:"start"`
	MaxRunning int    `json:"maxRunning"`
}

type jsonSchedule struct {
	Definition string `json:"definition"`
	Owner      string `json:"owner"`
	Every      string `json:"every"` // a Go duration; "0s": once
	Next       string `json:"next"`
	MaxRunning int    `json:"maxRunning"`
	CreatedAt  string `json:"createdAt"`
}

func writeSchedule(w http.ResponseWriter, s store.Schedule, status int) {
	var b bytes.Buffer
	json.NewEncoder(&b).Encode(jsonSchedule{Definition: s.Definition, Owner: s.Owner, Every: s.Every.String(),
		Next: formatTime(s.Next), MaxRunning: s.MaxRunning, CreatedAt: formatTime(s.CreatedAt)})
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

func (h *API) serveSchedule(w http.ResponseWriter, r *http.Request) {
	c, ok := h.authorize(w, r, r.Method != http.MethodGet)
	if !ok {
		return
	}
	d, ok := h.loadDefinition(w, r, c, 0)
	if !ok {
		return
	}
	switch r.Method {
	case http.MethodGet:
		s, err := h.jobs.Schedule(r.Context(), d.Name)
		if errors.Is(err, store.ErrNotFound) {
			apierr.WriteNew(w, http.StatusNotFound, "schedule_not_found", "the definition has no schedule")
			return
		}
		if err != nil {
			h.storeError(w, r, "read schedule", err)
			return
		}
		writeSchedule(w, s, http.StatusOK)
	case http.MethodDelete:
		err := h.jobs.DeleteSchedule(r.Context(), d.Name)
		if errors.Is(err, store.ErrNotFound) {
			apierr.WriteNew(w, http.StatusNotFound, "schedule_not_found", "the definition has no schedule")
			return
		}
		if err != nil {
			h.storeError(w, r, "delete schedule", err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPut:
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
		if err != nil {
			apierr.WriteNew(w, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is above 1 MiB")
			return
		}
		var req scheduleRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_json", "the body is not a schedule: "+err.Error())
			return
		}
		s := store.Schedule{Definition: d.Name, Owner: d.Owner, MaxRunning: req.MaxRunning}
		if req.Every != "" {
			if s.Every, err = time.ParseDuration(req.Every); err != nil || s.Every < 0 {
				apierr.WriteNew(w, http.StatusBadRequest, "invalid_schedule", "every must be a duration such as 90m or 24h")
				return
			}
		}
		if req.Start != "" {
			t, ok := parseInstant(req.Start)
			if !ok {
				apierr.WriteNew(w, http.StatusBadRequest, "invalid_schedule", "start must be an ISO 8601 instant")
				return
			}
			s.Next = t
		}
		s, err = h.jobs.SaveSchedule(r.Context(), s)
		var se *jobs.ScheduleError
		if errors.As(err, &se) {
			apierr.WriteNew(w, http.StatusBadRequest, "invalid_schedule", se.Msg)
			return
		}
		if err != nil {
			h.storeError(w, r, "save schedule", err)
			return
		}
		writeSchedule(w, s, http.StatusOK)
	}
}

// runScheduled starts a job from the newest version of a schedule's
// definition (jobs.DefinitionRunner): its spec as stored, RUNID
// "schedule", owned by the schedule's owner, run at once.
func (h *API) runScheduled(ctx context.Context, s store.Schedule) (string, error) {
	d, err := h.jobs.Definition(ctx, s.Definition, 0)
	if err != nil {
		return "", err
	}
	var spec definitionSpec
	if err := json.Unmarshal(d.Spec, &spec); err != nil {
		return "", fmt.Errorf("definition %s version %d: %w", d.Name, d.Version, err)
	}
	plain, matrix := splitMatrix(spec.Parameters)
	js := jobs.Spec{RunID: ScheduledRunID, Owner: s.Owner, Action: spec.Action, Targets: strings.TrimSpace(spec.Targets),
		Params: plain, Matrix: matrix, Require: strings.ToLower(spec.Require), Labels: spec.Labels,
		Definition: d.Name, DefinitionVersion: d.Version}
	if len(spec.Steps) > 0 {
		js.Steps = stepSpecs(spec.Steps)
	}
	if spec.ExecutionDuration != nil {
		if js.ExecDuration, err = parseExecutionDuration(fmt.Sprint(*spec.ExecutionDuration)); err != nil {
			return "", err
		}
	}
	j, err := h.jobs.Create(ctx, js)
	if err != nil {
		return "", err
	}
	if _, err := h.jobs.Run(ctx, j.ID); err != nil {
		return j.ID, err
	}
	return j.ID, nil
}

// ScheduledRunID is the RUNID of the jobs a schedule starts.
const ScheduledRunID = "schedule"
