package uwsapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/jobs"
	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
)

// TestWaitLeavesNoWatchers: WAIT requests on unknown jobs, another owner's
// job or a finished job must not leave watchers behind (they would pile up
// for ever).
func TestWaitLeavesNoWatchers(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := jobs.New(jobs.Config{Store: st, ResultsDir: filepath.Join(dir, "blobs")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	api, err := New(Config{Jobs: m, Authenticate: func(r *http.Request) (*auth.Claims, *apierr.Error) {
		c := &auth.Claims{Scopes: []string{auth.ScopeJobsRead}}
		c.Subject = r.Header.Get("X-Sub")
		return c, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateJob(context.Background(), store.Job{ID: "done", Owner: "alice", Phase: store.PhaseCompleted}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux, "http://hub")
	for i := range 20 {
		for _, path := range []string{fmt.Sprintf("/api/v1/jobs/nosuch%d?WAIT=5", i), "/api/v1/jobs/done?WAIT=5"} {
			for _, sub := range []string{"alice", "bob"} {
				req := httptest.NewRequest("GET", path, nil)
				req.Header.Set("X-Sub", sub)
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, req)
				if rec.Code == http.StatusOK && sub == "bob" || rec.Code >= 500 {
					t.Fatalf("%s as %s: %d %s", path, sub, rec.Code, rec.Body)
				}
			}
		}
	}
	if n := m.Watched(); n != 0 {
		t.Fatalf("%d watchers left behind", n)
	}
}
