package server

import (
	"strings"
	"testing"
	"time"
)

// TestNegativeSettingsAreErrors: a negative duration or count is a mistake
// (a sign typed by accident), never "the default": Start refuses it with an
// error naming the setting's flag.
func TestNegativeSettingsAreErrors(t *testing.T) {
	for _, tc := range []struct {
		flag string
		mod  func(*Config)
	}{
		{"--shutdown-timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }},
		{"--stats-every", func(c *Config) { c.StatsEvery = -time.Second }},
		{"--leeway", func(c *Config) { c.Leeway = -time.Second }},
		{"--code-ttl", func(c *Config) { c.CodeTTL = -time.Second }},
		{"--max-token-ttl", func(c *Config) { c.MaxTokenTTL = -time.Second }},
		{"--max-refresh-lifetime", func(c *Config) { c.MaxRefreshLifetime = -time.Second }},
		{"--session-ttl", func(c *Config) { c.Web.SessionTTL = -time.Second }},
		{"--account-token-ttl", func(c *Config) { c.Web.APITokenTTL = -time.Second }},
		{"--max-conns-per-token", func(c *Config) { c.Limits.ConnsPerToken = -1 }},
		{"--max-conns-per-subject", func(c *Config) { c.Limits.ConnsPerSubject = -1 }},
		{"--max-requests-per-address", func(c *Config) { c.Limits.RequestsPerSecond = -1 }},
		{"--request-burst", func(c *Config) { c.Limits.RequestBurst = -1 }},
		{"--fd-reserve", func(c *Config) { c.Limits.FDReserve = -1 }},
	} {
		cfg := Config{Listen: "127.0.0.1:0", Secret: testSecret, NodeID: "n1", Store: openStore(t, t.TempDir()), ResultsDir: t.TempDir()}
		tc.mod(&cfg)
		s, err := Start(cfg)
		if err == nil {
			s.Shutdown(t.Context())
			t.Errorf("%s negative: started", tc.flag)
			continue
		}
		if !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s negative: error %q does not name the flag", tc.flag, err)
		}
	}
}
