package control

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// TestCloseCodesCoverEveryReason: every relay close reason is exported with
// the code the server sends for it, as pkg/wire states it.
func TestCloseCodesCoverEveryReason(t *testing.T) {
	want := map[relay.CloseReason]string{
		relay.ReasonPeerClosed: "peer", relay.ReasonReadError: "none", relay.ReasonWriteError: "none",
		relay.ReasonDenied: "4003", relay.ReasonQueueBudget: "4008", relay.ReasonPairClosed: "1000",
	}
	for _, r := range relay.CloseReasons() {
		if !wire.CloseReason(r.String()).Known() {
			t.Errorf("relay close reason %q is unknown to pkg/wire", r)
		}
		if w, ok := want[r]; ok && closeCodeLabel(r) != w {
			t.Errorf("close reason %q labelled %q, want %q", r, closeCodeLabel(r), w)
		}
	}
}

// TestMetricsQueueBudget: the node's queued bytes and its budget are gauges.
func TestMetricsQueueBudget(t *testing.T) {
	rs, err := relay.NewServer(relay.Config{QueueBudgetBytes: 3 << 20, PingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&relayCollector{h: &Handler{cfg: Config{Relay: rs, Revocations: NewRevocations(time.Now)}}})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if len(f.GetMetric()) == 1 && f.GetMetric()[0].GetGauge() != nil {
			got[f.GetName()] = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if v, ok := got["switchboard_queue_budget_bytes"]; !ok || v != 3<<20 {
		t.Errorf("switchboard_queue_budget_bytes = %v (present %v), want %d", v, ok, 3<<20)
	}
	if v, ok := got["switchboard_queued_bytes"]; !ok || v != 0 {
		t.Errorf("switchboard_queued_bytes = %v (present %v), want 0", v, ok)
	}
}
