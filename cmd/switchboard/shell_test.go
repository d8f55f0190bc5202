package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// TestClientShell: `client --shell` moves raw bytes through a shell session
// to a host, as an ssh ProxyCommand would, and ends cleanly with stdin.
func TestClientShell(t *testing.T) {
	dir := startServe(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hostTok, err := run(ctx, nil, "token", "--data-dir", dir, "--topic", "ssh", "--prefix", "shell", "--scopes", "host")
	if err != nil {
		t.Fatal(err)
	}
	userTok, _ := run(ctx, nil, "token", "--data-dir", dir, "--topic", "ssh", "--prefix", "shell", "--scopes", "client")
	base := defaultPublicURL(dir)

	// A host that echoes every byte of every session, upper-cased.
	ctl, err := client.Dial(ctx, base, "ssh", strings.TrimSpace(hostTok), &client.Options{Prefix: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.CloseNow()
	go func() {
		for {
			_, data, err := ctl.Read(ctx)
			if err != nil {
				return
			}
			var m struct{ URI string }
			json.Unmarshal(data, &m)
			sess, err := client.DialURI(ctx, m.URI, nil)
			if err != nil {
				t.Error(err)
				return
			}
			go func() {
				defer sess.CloseNow()
				for {
					typ, p, err := sess.Read(ctx)
					if err != nil {
						return
					}
					sess.Write(ctx, typ, bytes.ToUpper(p))
				}
			}()
		}
	}()
	// The host's control connection is registered once a user's access
	// request stops getting 503 host_unavailable.
	user := strings.TrimSpace(userTok)
	wait.For(t, "host serving", func() bool {
		_, err := client.Access(ctx, base, "ssh", user, &client.Options{Prefix: "shell"})
		return err == nil
	})
	stdinR, stdinW := io.Pipe()
	var out syncBuffer
	done := make(chan error, 1)
	cmd := newRootCommand(stdinR, &out, io.Discard)
	cmd.SetArgs([]string{"client", "--shell", "--data-dir", dir, "--topic", "ssh", "--token", user})
	go func() { done <- cmd.ExecuteContext(ctx) }()
	if _, err := stdinW.Write([]byte("ssh-2.0-hello\r\n\x00\x01")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "echo", func() bool { return out.String() == "SSH-2.0-HELLO\r\n\x00\x01" })
	stdinW.Close() // ssh closes the pipe: the client closes the session
	if err := <-done; err != nil {
		t.Fatalf("client --shell: %v", err)
	}
}
