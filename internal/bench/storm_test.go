package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// TestStorm: a node with its default limits admits a storm of clients that
// each have their own token and address, in one and in two steps, and
// holds them all; the same clients behind one address with a small request
// budget get 429 rate_limited, counted by status and code, not 5xx.
func TestStorm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := servertest.Start(t)
	url, secret := s.Server.PublicURL(), s.Config.Secret
	for _, twoStep := range []bool{false, true} {
		before := s.Server.Relay().Stats().Accepted
		res, err := Storm(ctx, StormOptions{URL: url, Secret: secret, Conns: 40, Parallel: 40, TwoStep: twoStep})
		if err != nil {
			t.Fatalf("two-step %v: %v", twoStep, err)
		}
		if err := res.Err(); err != nil || res.Sources != 40 || res.AdmissionUS.Max <= 0 {
			t.Fatalf("two-step %v: %v (sources %d, admission %+v)", twoStep, err, res.Sources, res.AdmissionUS)
		}
		if got := s.Server.Relay().Stats().Accepted - before; got != 40 {
			t.Errorf("two-step %v: relay accepted %d connections, want 40", twoStep, got)
		}
		var sb strings.Builder
		if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "40 of 40") || !strings.Contains(sb.String(), "0 with 5xx; none") {
			t.Errorf("two-step %v: table: %v\n%s", twoStep, err, sb.String())
		}
	}

	nat := servertest.Start(t, func(c *server.Config, _ *server.Deps) {
		c.Limits = server.Limits{RequestsPerSecond: 1, RequestBurst: 10}
	})
	res, err := Storm(ctx, StormOptions{URL: nat.Server.PublicURL(), Secret: nat.Config.Secret, Conns: 30, Parallel: 30, Sources: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Err() == nil || res.ServerErrors != 0 || res.Failed != 0 || res.Refused["429 rate_limited"] == 0 || res.Admitted+res.Refused["429 rate_limited"] != 30 {
		t.Fatalf("behind one address: admitted %d, refused %v, 5xx %d, failed %d (%s)", res.Admitted, res.Refused, res.ServerErrors, res.Failed, res.FirstFailure)
	}
}
