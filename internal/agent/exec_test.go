package agent

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

func needProgram(t *testing.T, name string) {
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not found", name)
	}
}

// TestExecStream: messages go to the process's stdin, its stdout comes back
// as messages (cat echoes them), its stderr is logged.
func TestExecStream(t *testing.T) {
	needProgram(t, "sh")
	r := startRelay(t)
	var logs logBuffer
	a := runAgent(t, &Config{URL: r.URL, TokenFile: r.tokenFile("lab/sh"), Streams: []StreamConfig{{
		Name: "sh", Kind: KindExec, Topic: "lab/sh", Command: []string{"sh", "-c", `echo "to stderr" >&2; exec cat`},
	}}}, Options{Logger: logs.logger()})
	user := r.Dial(t, "lab/sh", "read", "write")
	wait.For(t, "host and user on the topic", func() bool { return r.TopicConns("lab/sh") == 2 })
	wait.For(t, "stderr logged", func() bool { return strings.Contains(logs.String(), `line="to stderr"`) })
	wait.For(t, "process up", func() bool { return *status(t, a, "sh").Local.Connected })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := user.Write(ctx, client.Text, []byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := readN(t, user, 5); string(got) != "ping\n" {
		t.Fatalf("echo: %q", got)
	}
	wait.For(t, "status counted", func() bool { return status(t, a, "sh").BytesToRelay == 5 })
	if st := status(t, a, "sh"); st.MessagesFromRelay != 1 || !*st.Local.Connected {
		t.Fatalf("status %+v", st)
	}
}

// TestExecEnvironment: the configured variables are set and the agent's
// SWITCHBOARD_* settings are not passed on.
func TestExecEnvironment(t *testing.T) {
	needProgram(t, "sh")
	t.Setenv("SWITCHBOARD_TOKEN", "must-not-leak")
	r := startRelay(t)
	user := r.Dial(t, "lab/env", "read", "write")
	a := runAgent(t, &Config{URL: r.URL, TokenFile: r.tokenFile("lab/env"), Streams: []StreamConfig{{
		Name: "env", Kind: KindExec, Topic: "lab/env", Env: map[string]string{"GREETING": "hi"},
		// Wait for a line on stdin, so the output comes after the user is there.
		Command: []string{"sh", "-c", `read x; echo "$GREETING ${SWITCHBOARD_TOKEN:-none}"; exec cat`},
	}}}, Options{})
	wait.For(t, "host on the topic", func() bool { return r.TopicConns("lab/env") == 2 })
	wait.For(t, "process up", func() bool { return *status(t, a, "env").Local.Connected })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	user.Write(ctx, client.Text, []byte("go\n"))
	if got, _ := readN(t, user, len("hi none\n")); string(got) != "hi none\n" {
		t.Fatalf("environment: %q", got)
	}
}

// TestExecRestarts: a process that exits is started again with backoff.
func TestExecRestarts(t *testing.T) {
	needProgram(t, "sh")
	r := startRelay(t)
	const minDelay, maxDelay = 20 * time.Millisecond, 50 * time.Millisecond
	sleeps := newHeldSleeps()
	a := runAgent(t, &Config{URL: r.URL, TokenFile: r.tokenFile("lab/x"), Streams: []StreamConfig{{
		Name: "x", Kind: KindExec, Topic: "lab/x", Command: []string{"sh", "-c", "exit 3"},
	}}}, Options{Backoff: Backoff{Min: minDelay, Max: maxDelay}, sleep: sleeps.sleep})
	// The restart delays are held (see heldSleeps): each is checked as it
	// is chosen, and no start may happen while one is pending.
	for i := range 3 {
		delay := sleeps.next(t, fmt.Sprintf("the delay after exit %d", i+1))
		bound := min(minDelay<<i, maxDelay) // doubles up to Max; drawn from [bound/2, bound]
		delay.within(t, bound/2, bound)
		if st := status(t, a, "x"); st.Local.Attempts != int64(i+1) || !strings.Contains(st.Local.LastError, "exit status 3") {
			t.Fatalf("before delay %d ends: local %+v", i+1, *st.Local)
		}
		delay.release()
	}
}

// TestExecStopsProcess: stopping the agent terminates the process.
func TestExecStopsProcess(t *testing.T) {
	needProgram(t, "sleep")
	r := startRelay(t)
	cfg := &Config{URL: r.URL, TokenFile: r.tokenFile("lab/x"), Streams: []StreamConfig{{
		Name: "x", Kind: KindExec, Topic: "lab/x", Command: []string{"sleep", "1000"}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, _ := New(cfg, Options{Backoff: fastBackoff})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	wait.For(t, "process started", func() bool { return *status(t, a, "x").Local.Connected })
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop")
	}
	if el := time.Since(start); el > stopGrace {
		t.Fatalf("stop took %v: SIGTERM not sent?", el)
	}
}
