package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"switchboard/internal/auth"
	"switchboard/internal/topic"
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
	fs.StringSliceVar(&f.scopes, "scopes", []string{auth.ScopeRead, auth.ScopeWrite}, "scopes, comma-separated: read, write; relay:admin, relay:stats, relay:issue for the control plane")
	fs.DurationVar(&f.ttl, "ttl", time.Hour, "lifetime")
	fs.StringVar(&f.prefix, "prefix", "session", "connection type")
	fs.StringVar(&f.bookingID, "booking-id", "", "booking id (the key for revoking it)")
	fs.StringVar(&f.sub, "sub", "", "subject (user)")
	fs.StringVar(&f.audience, "audience", "", "audience: the relay's public URL (default: the one the server in --data-dir uses)")
	return cmd
}

func mintToken(f *tokenFlags, now time.Time) (string, error) {
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
	return key.Sign(c)
}
