package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestPublishPhases: every phase publishes at the paced rate and its
// readers (websocket, then event-stream) receive every message.
func TestPublishPhases(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const readers, rate, window = 3, 400, 500 * time.Millisecond
	res, err := Publish(ctx, PublishOptions{URL: srv.PublicURL(), Secret: secret, Readers: readers, Size: 50,
		Clients: []int{1, 2}, Batches: []int{1, 10}, Rate: rate, Duration: window, Warmup: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Phases) != 6 {
		t.Fatalf("%d phases, want 6 (websocket, 2 × 2 HTTP, SSE)", len(res.Phases))
	}
	if p := res.Phases[5]; p.Readers != "sse" || p.Publisher != "websocket" {
		t.Fatalf("last phase %+v, want the websocket writer to SSE readers", p)
	}
	want := rate * window.Seconds()
	for _, p := range res.Phases {
		if p.Errors != 0 || p.FirstError != "" {
			t.Errorf("%s: %d errors, first %q", p.Name, p.Errors, p.FirstError)
		}
		if f := float64(p.Published); f < 0.7*want || f > 1.3*want {
			t.Errorf("%s: published %d in the window, want about %.0f", p.Name, p.Published, want)
		}
		if p.DeliveredPct < 80 || p.DeliveredPct > 120 {
			t.Errorf("%s: delivered %d of %d × %d", p.Name, p.Delivered, p.Published, readers)
		}
		if p.ServerCPUSec != nil {
			t.Errorf("%s: server CPU reported without a server pid", p.Name)
		}
	}
	var table strings.Builder
	if err := res.WriteTable(&table); err != nil || !strings.Contains(table.String(), "HTTP publish, 2 clients, batch 10") {
		t.Fatalf("table: %v\n%s", err, table.String())
	}
}
