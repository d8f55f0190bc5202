package uwsapi

import (
	"errors"
	"net/http"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/store"
)

// checkOwned answers the read of one of the caller's resources of kind
// ("job", "definition") that returned owner and err: 404 (code
// kind_not_found, message missing) when absent, 503 on a store failure,
// 403 (kind_forbidden) when another owner's and the caller is no admin.
// It reports whether the resource may be used.
func (h *API) checkOwned(w http.ResponseWriter, r *http.Request, c *caller, kind, owner string, err error, missing string) bool {
	if errors.Is(err, store.ErrNotFound) {
		apierr.WriteNew(w, http.StatusNotFound, kind+"_not_found", missing)
		return false
	}
	if err != nil {
		h.storeError(w, r, "read "+kind, err)
		return false
	}
	if !c.admin && owner != c.claims.Subject {
		apierr.WriteNew(w, http.StatusForbidden, kind+"_forbidden", "this "+kind+" belongs to another owner")
		return false
	}
	return true
}

// listJobs reads the jobs that the job list's filters in q select (see
// listFilter), after set has changed the filter (nil: nothing to change),
// and answers a bad filter or a store failure itself. It reports whether
// the jobs may be used.
func (h *API) listJobs(w http.ResponseWriter, r *http.Request, c *caller, q map[string][]string, set func(*store.JobFilter)) ([]store.Job, bool) {
	f, ok := h.listFilter(w, r, c, q)
	if !ok {
		return nil, false
	}
	if set != nil {
		set(&f)
	}
	js, err := h.jobs.Jobs(r.Context(), f)
	if err != nil {
		h.storeError(w, r, "list jobs", err)
		return nil, false
	}
	return js, true
}
