package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/topic"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

type tokenFlags struct {
	secretFlags
	topic     string
	scopes    []string
	ttl       time.Duration
	prefix    string
	bookingID string
	sub       string
	audience  string
	agent     string
	labels    []string
}

func newTokenCommand(io stdio) *cobra.Command {
	var f tokenFlags
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a relay token",
		Long: `Mint a relay token and print it alone on stdout. Next to a default server,
"switchboard token --topic demo" gives a token for that server: the secret and
audience are read from the same --data-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := mintToken(&f, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(io.out, tok)
			return err
		},
	}
	fs := cmd.Flags()
	f.secretFlags.register(cmd)
	fs.StringVar(&f.topic, "topic", "", "topic or pattern (expt42/*) the token grants (required with read or write)")
	fs.StringSliceVar(&f.scopes, "scopes", []string{auth.ScopeRead, auth.ScopeWrite}, "scopes, comma-separated: read, write; relay:admin, relay:stats, relay:deny, relay:mint, relay:issue, jobs:read, jobs:write, jobs:admin for the API (docs/control.md)")
	fs.DurationVar(&f.ttl, "ttl", time.Hour, "lifetime")
	fs.StringVar(&f.prefix, "prefix", wire.PrefixSession, "connection type")
	fs.StringVar(&f.bookingID, "booking-id", "", "booking id (the key for revoking it)")
	fs.StringVar(&f.sub, "sub", "", "subject (user)")
	fs.StringVar(&f.audience, "audience", "", "audience: the relay's public URL (default: the one the server in --data-dir uses)")
	fs.StringVar(&f.agent, "agent", "", "agent id, for a host agent's token (with --prefix agent --scopes agent; --topic defaults to it)")
	fs.StringSliceVar(&f.labels, "labels", nil, "labels the agent may claim, comma-separated key=value (key=* allows any value)")
	return cmd
}

func mintToken(f *tokenFlags, now time.Time) (string, error) {
	if len(f.labels) > 0 && f.agent == "" {
		return "", fmt.Errorf("--labels are for an agent's token: give --agent too")
	}
	if f.agent != "" && f.topic == "" {
		f.topic = f.agent // an agent token's topic is its id
	}
	if f.agent != "" && f.topic != f.agent {
		return "", fmt.Errorf("--agent %q: an agent token's topic is its id: give --topic %s", f.agent, f.agent)
	}
	for _, l := range f.labels {
		if k, _, ok := strings.Cut(l, "="); !ok || k == "" {
			return "", fmt.Errorf("--labels: %q: want key=value or key=*", l)
		}
	}
	needsTopic := false
	for _, s := range f.scopes {
		needsTopic = needsTopic || s == auth.ScopeRead || s == auth.ScopeWrite
	}
	if f.topic == "" && needsTopic {
		return "", fmt.Errorf("--topic is required for scopes read and write")
	}
	if f.topic != "" {
		if err := topic.ValidPattern(f.topic); err != nil {
			return "", fmt.Errorf("--topic: %w", err)
		}
	}
	if f.ttl <= 0 {
		return "", fmt.Errorf("--ttl %v: must be positive", f.ttl)
	}
	if len(f.scopes) == 0 {
		return "", fmt.Errorf("--scopes: at least one scope is needed")
	}
	secret, err := f.load(false)
	if err != nil {
		return "", err
	}
	key, err := auth.NewHMACKey(f.alg, secret)
	if err != nil {
		return "", err
	}
	aud := f.audience
	if aud == "" {
		aud = defaultPublicURL(f.dataDir)
	}
	c := auth.NewClaims(aud, now, f.ttl)
	c.Topic, c.Prefix, c.Scopes, c.BookingID, c.Subject = f.topic, f.prefix, f.scopes, f.bookingID, f.sub
	c.Agent, c.Labels = f.agent, f.labels
	return key.Sign(c)
}
