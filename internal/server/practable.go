package server

import (
	"github.com/switchboard-hub/switchboard/internal/access"
	"github.com/switchboard-hub/switchboard/internal/control"
)

// practableStats creates the publisher of practable's stats feed if
// cfg.PractableStats names its scope, and returns the access handler's
// configuration of the feed (nil: none).
func (s *Server) practableStats(cfg Config) *access.PractableStats {
	if cfg.PractableStats == "" {
		return nil
	}
	s.practable = control.NewPractableStatsPublisher(cfg.StatsEvery)
	return &access.PractableStats{Scope: cfg.PractableStats, Update: s.practable.Update}
}
