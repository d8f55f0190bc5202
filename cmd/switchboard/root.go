package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchboard-hub/switchboard/internal/buildinfo"
)

func newRootCommand(in io.Reader, out, errOut io.Writer) *cobra.Command {
	io := stdio{in: in, out: out, err: errOut}
	root := &cobra.Command{
		Use:   "switchboard",
		Short: "Secure real-time websocket relay and coordination hub",
		Long: `Switchboard relays websocket messages between hosts and users on topics,
authenticating every connection with short-lived tokens and one-time codes.

Every flag has an environment twin: --public-url is SWITCHBOARD_PUBLIC_URL.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddCommand(newServeCommand(io), newTokenCommand(io), newClientCommand(io), newHostCommand(io), newBenchCommand(io), newLoginLinkCommand(io), newVersionCommand(io), newHealthcheckCommand(io))
	return root
}

// envName is the environment twin of a flag: SWITCHBOARD_ and the flag name
// in upper case with "-" as "_".
func envName(flag string) string {
	return "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its
// environment twin, if that is set.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if sv, isSlice := f.Value.(pflag.SliceValue); isSlice {
			err = sv.Replace(splitList(v))
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			err = fmt.Errorf("environment %s: %w", envName(f.Name), err)
			return
		}
		f.Changed = true // set, as if given on the command line
	})
	return err
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// logFlags are the logging flags shared by long-running commands.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", l.format)
}

func newVersionCommand(io stdio) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date and Go version",
		Long: `Print the version, the commit and the build date (set with -ldflags in
release builds, see internal/buildinfo; else from the Go toolchain's build
information) and the Go version that built the binary.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			info := buildinfo.Get()
			if asJSON {
				return json.NewEncoder(io.out).Encode(info)
			}
			_, err := fmt.Fprintf(io.out, "switchboard %s\ncommit: %s\nbuilt: %s\ngo: %s\n", info.Version, info.Commit, info.Date, info.GoVersion)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object (version, commit, date, go_version)")
	return cmd
}
