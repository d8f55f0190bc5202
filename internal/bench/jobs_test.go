package bench

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestJobsScenario(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Jobs(ctx, JobsOptions{URL: srv.PublicURL(), Secret: secret, ServerPID: os.Getpid(),
		Agents: 5, Jobs: 2, Files: true, Waiters: 20, WaitSec: 30})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Jobs) != 2 || res.Agents != 5 || res.ConnectSec <= 0 {
		t.Fatalf("result %+v", res)
	}
	for _, j := range res.Jobs {
		// Sane, not the targets: within the job timeout, parts in order.
		if j.ID == "" || j.SummaryRows != 5 || j.Results != 6 || !(0 < j.PostSec && j.PostSec <= j.CompletedSec && j.CompletedSec <= j.Sec && j.Sec < 60) {
			t.Errorf("job %+v", j)
		}
		if j.ServerCPUSec == nil {
			t.Errorf("job %s: no server CPU time", j.ID)
		}
	}
	if s := res.JobSec; !(0 < s.Min && s.Min <= s.Median && s.Median <= s.Max) {
		t.Errorf("job seconds %+v", s)
	}
	if res.Released != 20 || res.GoroutinesHeld < res.GoroutinesBefore+20 || res.HeldSec <= 0 {
		t.Errorf("waiters: released %d, goroutines %d → %d, held after %v s", res.Released, res.GoroutinesBefore, res.GoroutinesHeld, res.HeldSec)
	}
	if l := res.ReleaseMS; !(0 <= l.P50 && l.P50 <= l.P99 && l.P99 <= l.Max && l.Max < 30_000 && l.Max <= res.ReleaseFromSendMS.Max) {
		t.Errorf("release %+v, from send %+v", l, res.ReleaseFromSendMS)
	}
	if res.ServerRSSBefore <= 0 || res.ServerRSSHeld <= 0 || res.RSSTargetMet == nil {
		t.Errorf("RSS %d → %d", res.ServerRSSBefore, res.ServerRSSHeld)
	}
	if res.CleanupError != "" {
		t.Errorf("cleanup: %s", res.CleanupError)
	}

	b, _ := json.Marshal(&res)
	for _, f := range []string{`"scenario":"jobs"`, `"job_sec":{"min"`, `"release_ms":{"p50"`, `"server_rss_delta_bytes"`, `"waiters":20`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("JSON lacks %s: %s", f, b)
		}
	}
	var sb strings.Builder
	if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "RUN → COMPLETED") || !strings.Contains(sb.String(), "release ms") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
	t.Logf("\n%s", sb.String())

	if _, err := Jobs(ctx, JobsOptions{URL: "http://192.0.2.1:80", Secret: secret}); err == nil {
		t.Error("non-loopback URL accepted")
	}
	if _, err := Jobs(ctx, JobsOptions{URL: srv.PublicURL(), Secret: secret, Waiters: 1 << 30}); err == nil {
		t.Error("more waiters than file descriptors accepted")
	}
}
