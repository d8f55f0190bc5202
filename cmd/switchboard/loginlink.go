package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"switchboard/internal/auth"
	"switchboard/internal/web"
)

type loginLinkFlags struct {
	secretFlags
	publicURL string
}

func newLoginLinkCommand(io stdio) *cobra.Command {
	var f loginLinkFlags
	cmd := &cobra.Command{
		Use:   "login-link",
		Short: "Print a one-time admin login link for the dashboard",
		Long: `Print a one-time admin login link for the web dashboard, alone on stdout.
The link signs in once, as admin, within 15 minutes. It is signed with the
server's secret and made for its public URL, both read from --data-dir (as
"switchboard token" does), so it works for whoever can read the data
directory, with or without single sign-on configured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			link, exp, err := makeLoginLink(&f, time.Now())
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintln(io.out, link); err != nil {
				return err
			}
			_, err = fmt.Fprintf(io.err, "switchboard: one-time admin login link, valid until %s\n", exp.Local().Format("15:04:05 MST"))
			return err
		},
	}
	f.secretFlags.register(cmd)
	cmd.Flags().StringVar(&f.publicURL, "public-url", "", "the server's public URL (default: the one the server in --data-dir uses)")
	return cmd
}

func makeLoginLink(f *loginLinkFlags, now time.Time) (string, time.Time, error) {
	secret, err := f.load(false)
	if err != nil {
		return "", time.Time{}, err
	}
	key, err := auth.NewHMACKey(f.alg, secret)
	if err != nil {
		return "", time.Time{}, err
	}
	pub := f.publicURL
	if pub == "" {
		pub = defaultPublicURL(f.dataDir)
	}
	return web.NewLoginLink(key, pub, now)
}

// printLoginLink prints a one-time admin login link at start when no
// single sign-on provider is configured: plainly on stderr, to copy into a
// browser, and announced (without the link: it is a credential) in the log.
func printLoginLink(io stdio, log *slog.Logger, dash *web.Handler, dataDir string) error {
	link, exp, err := dash.LoginLink()
	if err != nil {
		return err
	}
	log.Info("dashboard: no single sign-on configured; one-time admin login link printed on stderr",
		"valid_until", exp.UTC().Format(time.RFC3339), "fresh_link", "switchboard login-link --data-dir "+dataDir)
	_, err = fmt.Fprintf(io.err, "\nDashboard: open this one-time admin login link (valid 15 minutes, single use):\n\n    %s\n\nFor a fresh one: switchboard login-link --data-dir %s\n\n", link, dataDir)
	return err
}
