package bench

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestAccessBaseline: the baseline server (as the hidden child command runs
// it: URL on its first output line) admits the one-step loop of both
// clients with no token, and a relay run compares to it.
func TestAccessBaseline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	served := make(chan error, 1)
	sctx, stopServer := context.WithCancel(ctx)
	go func() { served <- RunAccessBaselineServer(sctx, pw) }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimSpace(line)

	var base AccessResult
	for _, raw := range []bool{false, true} {
		base, err = Access(ctx, AccessOptions{URL: url, Baseline: true, Clients: 2, Sources: 2, Duration: 200 * time.Millisecond, Raw: raw})
		if err != nil {
			t.Fatalf("raw %v: %v", raw, err)
		}
		if base.Flow != "baseline" || base.Exchanges == 0 || base.Errors != 0 || base.AccessUS.Max != 0 {
			t.Fatalf("raw %v: flow %s exchanges %d errors %d (%s) access %+v", raw, base.Flow, base.Exchanges, base.Errors, base.FirstError, base.AccessUS)
		}
	}
	stopServer()
	if err := <-served; err != nil {
		t.Errorf("baseline server: %v", err)
	}

	srv, secret := startServer(t)
	relay, err := Access(ctx, AccessOptions{URL: srv.PublicURL(), Secret: secret, Clients: 2, Sources: 2, Duration: 200 * time.Millisecond, Raw: true, OneStep: true})
	if err != nil {
		t.Fatal(err)
	}
	cmp, err := CompareAccess(base, relay)
	if err != nil {
		t.Fatal(err)
	}
	if want := relay.ExchangesPerSec / base.ExchangesPerSec; cmp.Ratio != want || cmp.Ratio <= 0 {
		t.Errorf("ratio %v, want %v", cmp.Ratio, want)
	}
	var sb strings.Builder
	if err := cmp.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "one-step / baseline") || !strings.Contains(sb.String(), "access baseline") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
	if _, err := CompareAccess(AccessResult{}, relay); err == nil {
		t.Error("a baseline without exchanges compared")
	}
}
