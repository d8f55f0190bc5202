package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestAccessOneStep: the access scenario's --one-step mode connects with the
// token in the handshake, with pkg/client and with the raw client: every
// exchange is one accepted connection, and no access request is made.
func TestAccessOneStep(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, raw := range []bool{false, true} {
		before := srv.Relay().Stats().Accepted
		res, err := Access(ctx, AccessOptions{URL: srv.PublicURL(), Secret: secret, Clients: 3, Sources: 2, Duration: 300 * time.Millisecond, Raw: raw, OneStep: true})
		if err != nil {
			t.Fatalf("raw %v: %v", raw, err)
		}
		if res.Flow != "one-step" || res.Exchanges == 0 || res.Errors != 0 {
			t.Fatalf("raw %v: flow %s exchanges %d errors %d (%s)", raw, res.Flow, res.Exchanges, res.Errors, res.FirstError)
		}
		if got := srv.Relay().Stats().Accepted - before; got != res.Exchanges+1 {
			t.Errorf("raw %v: relay accepted %d connections, want %d", raw, got, res.Exchanges+1)
		}
		if res.AccessUS.Max != 0 || res.ExchangeUS.P50 <= 0 {
			t.Errorf("raw %v: access latency %+v (want none), exchange %+v", raw, res.AccessUS, res.ExchangeUS)
		}
		var sb strings.Builder
		if err := res.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "one step") || strings.Contains(sb.String(), "access µs") {
			t.Errorf("raw %v: table: %v\n%s", raw, err, sb.String())
		}
	}
}
