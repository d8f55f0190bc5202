package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-hub/switchboard/internal/playscript"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

type clientFlags struct {
	url       string
	topic     string
	token     string
	tokenFile string
	prefix    string
	binary    bool
	shell     bool
	record    string
	keepOpen  bool
	dataDir   string
	play      string
	strict    bool
}

func newClientCommand(io stdio) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "client",
		Short: "Connect to a topic: print what arrives, send what is typed",
		Long: `Connect to a topic through the access endpoint. Received text messages are
printed as lines, binary ones base64-encoded (raw with --binary). Lines read
from stdin are sent as text messages (raw chunks as binary with --binary).

With --shell the client opens a 1:1 session with the host serving the topic
on the shell prefix and moves raw bytes between stdin/stdout and the host's
local service, so it can be an ssh ProxyCommand:
  ssh -o ProxyCommand='switchboard client --shell --url URL --topic T --token-file F' user@lab

With --play FILE the messages come from a script instead of stdin (which is
then not read): lines sent as messages, [500ms] delays, and
<'regex',count,timeout> waits for received messages (docs/playback.md). The
whole script is checked before connecting; a malformed line is reported with
its line number and nothing is sent. A wait that times out is logged and the
script goes on, unless --play-strict is given.

When stdin or the script ends the client closes normally, unless --keep-open
is given.
Exit status: 0 normal end, 2 refused by the relay, 3 closed by the relay,
4 a wait of the script timed out under --play-strict, 1 any other failure
(a malformed script included).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runClient(cmd.Context(), io, &f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.url, "url", "", "relay base URL (default: the public URL the server in --data-dir uses)")
	fs.StringVar(&f.topic, "topic", "", "topic to connect to (required)")
	fs.StringVar(&f.token, "token", "", "token (prefer --token-file or SWITCHBOARD_TOKEN: flags show in ps)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the token")
	fs.StringVar(&f.prefix, "prefix", client.DefaultPrefix, "connection type")
	fs.BoolVar(&f.binary, "binary", false, "raw bytes: send stdin in binary chunks, print binary messages unencoded")
	fs.BoolVar(&f.shell, "shell", false, "a 1:1 session with a host on the shell prefix, raw bytes both ways (for ssh: -o ProxyCommand='switchboard client --shell --topic T --token-file F')")
	fs.StringVar(&f.record, "record", "", "append received messages to this file as JSON lines with RFC 3339 nanosecond timestamps")
	fs.BoolVar(&f.keepOpen, "keep-open", false, "keep receiving after stdin (or the --play script) ends")
	fs.StringVar(&f.play, "play", "", "send the messages of this script (docs/playback.md) instead of reading stdin")
	fs.BoolVar(&f.strict, "play-strict", false, "with --play: a wait that times out ends the client with status 4")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "data directory of a local server (for the default --url)")
	return cmd
}

// recordLine is one line of a --record file.
type recordLine struct {
	Time string `json:"t"`    // RFC 3339 with nanoseconds, UTC
	Type string `json:"type"` // "text" or "binary"
	Data string `json:"data"` // the text, or base64 of the binary payload
}

func runClient(ctx context.Context, io stdio, f *clientFlags) error {
	if f.shell {
		if f.play != "" {
			return fmt.Errorf("--shell and --play do not go together: a shell session carries raw bytes")
		}
		// Raw bytes both ways and nothing else on stdout, so that the
		// client can stand in for a TCP connection (ssh ProxyCommand).
		f.prefix, f.binary = wire.PrefixShell, true
	}
	if f.topic == "" {
		return fmt.Errorf("--topic is required")
	}
	tok, err := readToken(f.token, f.tokenFile)
	if err != nil {
		return err
	}
	// The whole script is checked before anything is opened or sent.
	var script *playscript.Script
	switch {
	case f.play != "":
		if script, err = loadScript(f.play); err != nil {
			return err
		}
	case f.strict:
		return fmt.Errorf("--play-strict needs --play")
	}
	base := f.url
	if base == "" {
		base = defaultPublicURL(f.dataDir)
	}
	var rec *os.File
	if f.record != "" {
		if rec, err = os.OpenFile(f.record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
			return fmt.Errorf("--record: %w", err)
		}
		defer rec.Close()
	}
	conn, err := client.Dial(ctx, base, f.topic, tok, &client.Options{Prefix: f.prefix})
	if err != nil {
		return clientExit(err)
	}
	defer conn.CloseNow()

	var player *playscript.Runner
	if script != nil {
		player = newPlayer(script, conn, f.strict, io.err)
	}
	readErr := make(chan error, 1)
	go func() { readErr <- receive(ctx, conn, io.out, rec, f.binary, f.shell, player) }()
	sendErr := make(chan error, 1)
	go func() {
		if player != nil {
			sendErr <- player.Run(ctx)
			return
		}
		sendErr <- send(ctx, conn, io.in, f.binary)
	}()

	for {
		select {
		case err := <-readErr:
			return clientExit(err)
		case err := <-sendErr:
			var te *playscript.TimeoutError
			if errors.As(err, &te) {
				conn.Close()
				return &exitError{code: 4, msg: te.Error() + " (--play-strict)"}
			}
			if err != nil {
				return clientExit(err)
			}
			if f.keepOpen {
				sendErr = nil // stdin is done; keep receiving
				continue
			}
			return clientExit(conn.Close())
		case <-ctx.Done():
			return clientExit(conn.Close())
		}
	}
}

// loadScript reads and checks a whole --play script.
func loadScript(path string) (*playscript.Script, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--play: %w", err)
	}
	defer file.Close()
	return playscript.Parse(file, path)
}

// newPlayer returns the runner of a --play script that sends on conn and
// logs timeouts it goes on after to logw.
func newPlayer(s *playscript.Script, conn *client.Conn, strict bool, logw io.Writer) *playscript.Runner {
	r := playscript.NewRunner(s, playscript.SenderFunc(func(ctx context.Context, m *playscript.Message) error {
		typ := client.Text
		if m.Binary() {
			typ = client.Binary
		}
		return conn.Write(ctx, typ, m.Data)
	}))
	r.Strict = strict
	r.OnTimeout = func(e *playscript.TimeoutError) {
		fmt.Fprintf(logw, "switchboard: warning: %v; going on\n", e)
	}
	return r
}

func readToken(token, file string) (string, error) {
	switch {
	case token != "" && file != "":
		return "", fmt.Errorf("give --token or --token-file, not both")
	case token != "":
		return token, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("--token-file %s is empty", file)
		}
		return t, nil
	}
	return "", fmt.Errorf("a token is required: --token-file, --token or SWITCHBOARD_TOKEN")
}

// clientExit maps a client error to the documented exit status.
func clientExit(err error) error {
	var ae *client.AccessError
	var ce *client.CloseError
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return nil
	case errors.As(err, &ae):
		return &exitError{code: 2, msg: strings.TrimPrefix(ae.Error(), "client: ")}
	case errors.As(err, &ce) && ce.Code == wire.CloseNormal:
		return nil
	case errors.As(err, &ce):
		return &exitError{code: 3, msg: strings.TrimPrefix(ce.Error(), "client: ")}
	}
	return err
}

// receive prints (and records) what arrives, and hands it to player, if any,
// once it is printed and recorded.
func receive(ctx context.Context, conn *client.Conn, out io.Writer, rec *os.File, raw, shell bool, player *playscript.Runner) error {
	w := bufio.NewWriter(out)
	var buf []byte
	for {
		typ, data, err := conn.ReadInto(ctx, buf)
		buf = data
		if err != nil {
			w.Flush()
			return err
		}
		if shell && typ == client.Text {
			continue // a byte stream: text messages are not part of it
		}
		now := time.Now().UTC()
		switch {
		case typ == client.Binary && raw:
			w.Write(data)
		case typ == client.Binary:
			w.WriteString(base64.StdEncoding.EncodeToString(data))
			w.WriteByte('\n')
		default:
			w.Write(data)
			w.WriteByte('\n')
		}
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		if rec != nil {
			line := recordLine{Time: now.Format(time.RFC3339Nano), Type: "text", Data: string(data)}
			if typ == client.Binary {
				line.Type, line.Data = "binary", base64.StdEncoding.EncodeToString(data)
			}
			b, _ := json.Marshal(line)
			if _, err := rec.Write(append(b, '\n')); err != nil {
				return fmt.Errorf("--record: %w", err)
			}
		}
		if player != nil {
			player.Received(data)
		}
	}
}

// send sends stdin: lines as text messages, or raw chunks as binary ones.
// It returns nil at the end of input.
func send(ctx context.Context, conn *client.Conn, in io.Reader, raw bool) error {
	if raw {
		buf := make([]byte, 32<<10)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				if werr := conn.Write(ctx, client.Binary, buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read stdin: %w", err)
			}
		}
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if err := conn.Write(ctx, client.Text, sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	return nil
}
