package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/datadir"
	"github.com/switchboard-hub/switchboard/internal/web"
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

// printLoginLink hands out a one-time admin login link at start when no
// single sign-on provider is configured. The link is a credential, so it
// never goes through the logger and never into a log stream that systemd
// or docker keep: it is written to the data directory's login-link file
// (mode 0600; whoever can read the directory holds the secret anyway), and
// printed as plain text on stderr only when stderr is a terminal (serve
// run by hand). The log says where the link is, never what it is.
func printLoginLink(io stdio, log *slog.Logger, dash *web.Handler, dataDir string) error {
	link, exp, err := dash.LoginLink()
	if err != nil {
		return err
	}
	return announceLoginLink(io.err, isTerminal(io.err), log, link, exp, dataDir)
}

// announceLoginLink writes link to the data directory's login-link file
// and, if terminal, prints it on w; see printLoginLink.
func announceLoginLink(w io.Writer, terminal bool, log *slog.Logger, link string, exp time.Time, dataDir string) error {
	path, err := datadir.WriteLoginLink(dataDir, link)
	if err != nil {
		return err
	}
	where := "in " + path
	if terminal {
		where += " and on the terminal"
	}
	log.Info("dashboard: no single sign-on configured; one-time admin login link written "+where,
		"file", path, "valid_until", exp.UTC().Format(time.RFC3339), "fresh_link", "switchboard login-link --data-dir "+dataDir)
	if !terminal {
		return nil
	}
	_, err = fmt.Fprintf(w, "\nDashboard: open this one-time admin login link (valid 15 minutes, single use):\n\n    %s\n\nFor a fresh one: switchboard login-link --data-dir %s\n\n", link, dataDir)
	return err
}

// isTerminal reports whether w is a terminal (a character device), not a
// pipe, socket or file that a service manager or container runtime keeps.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
