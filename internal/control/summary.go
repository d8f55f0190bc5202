package control

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// SummaryTopic is the system topic of the node's aggregates (Summary): what
// an overview shows, at a cost that does not grow with the connections
// (about 2 KiB a report whatever their number), where the stats topic
// carries every connection (about 530 B each).
const SummaryTopic = "stats/summary"

// summaryTopTopics is how many of the busiest topics a Summary lists.
const summaryTopTopics = 10

// Summary is the message of SummaryTopic: this node's aggregates.
type Summary struct {
	Time        time.Time      `json:"time"`
	Connections int            `json:"connections"`
	Topics      int            `json:"topics"`
	Accepted    uint64         `json:"accepted"`
	ByPrefix    map[string]int `json:"by_prefix"`
	// TopTopics are the busiest topics with a message since the previous
	// summary (idle ones are left out; so the first summary has none), by
	// connections, then by traffic.
	TopTopics []TopicSummary `json:"top_topics"`
	// OpenDrops are the drops of the open connections, by reason.
	OpenDrops DropCounts `json:"open_drops"`
	// Totals are the node's counters since it started (relay.Stats): a
	// reader's rates are their differences between two summaries.
	Totals SummaryTotals `json:"totals"`
	// Dashboard sums the open connections of the dashboard's live views
	// (system topics: stats, stats/summary, agents, jobs/…), so that a
	// reader can show their traffic apart from the users'.
	Dashboard SummaryTraffic `json:"dashboard"`
}

// TopicSummary is one topic of Summary.TopTopics.
type TopicSummary struct {
	Topic       string `json:"topic"`
	Connections int    `json:"connections"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
	Active      bool   `json:"active"` // a message since the previous report
}

// SummaryTotals are a node's traffic counters since it started.
type SummaryTotals struct {
	MessagesIn  uint64            `json:"messages_in"`
	MessagesOut uint64            `json:"messages_out"`
	BytesIn     uint64            `json:"bytes_in"`
	BytesOut    uint64            `json:"bytes_out"`
	Drops       map[string]uint64 `json:"drops"`
}

// SummaryTraffic is the traffic of some open connections.
type SummaryTraffic struct {
	Connections int    `json:"connections"`
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
}

// isDashboardTopic reports whether topic is one the dashboard's live views
// read (only the server publishes there).
func isDashboardTopic(topic string) bool {
	return topic == StatsTopic || topic == SummaryTopic || topic == ChangesTopic || topic == "agents" || strings.HasPrefix(topic, "jobs/")
}

// Summarise computes rs's Summary at now; since is the time of the
// previous one (zero: none), which decides which topics count as active.
func Summarise(rs *relay.Server, now, since time.Time) Summary {
	st := rs.Stats()
	conns := rs.Connections()
	s := Summary{Time: now.UTC(), Connections: st.Connections, Topics: st.Topics, Accepted: st.Accepted,
		ByPrefix: map[string]int{},
		Totals: SummaryTotals{MessagesIn: st.MessagesIn, MessagesOut: st.MessagesOut, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
			Drops: st.Drops}}
	topics := map[string]*TopicSummary{}
	for _, cs := range conns {
		s.ByPrefix[cs.Info.Prefix]++
		t := topics[cs.Info.Topic]
		if t == nil {
			t = &TopicSummary{Topic: cs.Info.Topic}
			topics[cs.Info.Topic] = t
		}
		t.Connections++
		t.BytesIn += cs.BytesIn
		t.BytesOut += cs.BytesOut
		if cs.LastActivity.After(since) && cs.LastActivity.After(cs.ConnectedAt) && !since.IsZero() {
			t.Active = true
		}
		s.OpenDrops.QueueHead += cs.DropsByReason[relay.DropQueueHead]
		s.OpenDrops.QueueTail += cs.DropsByReason[relay.DropQueueTail]
		s.OpenDrops.NotPermitted += cs.DropsByReason[relay.DropNotPermitted]
		s.OpenDrops.SenderClosed += cs.DropsByReason[relay.DropSenderClosed]
		s.OpenDrops.QueueBudget += cs.DropsByReason[relay.DropQueueBudget]
		if isDashboardTopic(cs.Info.Topic) {
			s.Dashboard.Connections++
			s.Dashboard.MessagesIn += cs.MessagesIn
			s.Dashboard.MessagesOut += cs.MessagesOut
			s.Dashboard.BytesIn += cs.BytesIn
			s.Dashboard.BytesOut += cs.BytesOut
		}
	}
	all := make([]*TopicSummary, 0, len(topics))
	for _, t := range topics {
		if t.Active {
			all = append(all, t)
		}
	}
	slices.SortFunc(all, func(a, b *TopicSummary) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(b.BytesIn+b.BytesOut, a.BytesIn+a.BytesOut),
			strings.Compare(a.Topic, b.Topic))
	})
	s.TopTopics = make([]TopicSummary, 0, summaryTopTopics)
	for _, t := range all[:min(len(all), summaryTopTopics)] {
		s.TopTopics = append(s.TopTopics, *t)
	}
	return s
}
