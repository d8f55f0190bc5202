package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable writes r as a human-readable table.
func (r *FanoutResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rate := "unpaced"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%g msg/s", r.Rate)
	}
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	if r.Writers <= 1 && r.Topics <= 1 {
		row("scenario", "fanout: 1 writer, %d readers, topic %s", r.Readers, r.Topic)
	} else {
		row("scenario", "fanout: %s, topic%s %s", r.shape(), plural(r.Topics), topicRange(r.Topic, r.Topics))
	}
	row("relay", "%s", r.URL)
	row("message size", "%d B", r.Size)
	row("rate", "%s", rate)
	if r.ReaderClient != "" {
		row("reader client", "%s", r.ReaderClient)
	}
	row("measured", "%.3f s (after %.3f s warm-up; connect %.3f s, drain %.3f s)", r.DurationSec, r.WarmupSec, r.ConnectSec, r.DrainSec)
	row("sent", "%d (%.0f msg/s)", r.Sent, r.SentPerSec)
	row("delivered", "%d (%.0f msg/s, %.1f MB/s)", r.Delivered, r.DeliveredPerSec, r.MBPerSec)
	row("in the window", "%d received while measuring, whenever sent (%.0f msg/s)", r.ReceivedInWindow, r.ReceivedInWindowPerSec)
	if r.DrainSec > 0.1*r.DurationSec && r.DeliveredPerSecWithDrain > 0 {
		row("", "%.0f msg/s counting the %.1f s drain: readers were far behind at the end", r.DeliveredPerSecWithDrain, r.DrainSec)
	}
	l := r.LatencyUS
	row("latency µs", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s", us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max))
	row("drops", "%d (%.2f%% of expected), gaps %d, reordered %d", r.Drops, pct(r.Drops, r.Sent*uint64(r.Readers)), r.Gaps, r.Reordered)
	if r.Incomplete > 0 || r.ReaderErrors > 0 {
		row("readers", "%d incomplete at the end of the drain, %d failed", r.Incomplete, r.ReaderErrors)
	}
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	row("client CPU", "%.2f s (%.0f%% of one core)", r.ClientCPUSec, 100*r.ClientCPUSec/r.DurationSec)
	if r.ServerCPUSec != nil {
		row("server CPU", "%.2f s (%.0f%% of one core)", *r.ServerCPUSec, 100**r.ServerCPUSec/r.DurationSec)
	}
	if r.ServerPeakRSSBytes != nil {
		row("server peak RSS", "%.1f MiB", float64(*r.ServerPeakRSSBytes)/(1<<20))
	}
	return tw.Flush()
}

func us(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0")
	}
	return fmt.Sprintf("%.2f", v)
}

func pct(n, of uint64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// shape describes the topics, writers and readers of r.
func (r *FanoutResult) shape() string {
	s := fmt.Sprintf("%d writer%s → %d readers", max(r.Writers, 1), plural(r.Writers), r.Readers)
	if r.Topics > 1 {
		s = fmt.Sprintf("%d topics × (%s), %d readers in all", r.Topics, s, r.Topics*r.Readers)
	}
	return s
}

// topicRange names the topics of FanoutTopics(topic, n) briefly.
func topicRange(topic string, n int) string {
	if n <= 1 {
		return topic
	}
	return fmt.Sprintf("%s/0 … %s/%d", topic, topic, n-1)
}

func plural(n int) string {
	if n == 1 || n == 0 {
		return ""
	}
	return "s"
}
