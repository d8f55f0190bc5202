package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// idleConn is a relay.Conn that never receives anything.
type idleConn struct{ closed chan struct{} }

func (c *idleConn) ReadMessage() (relay.MessageType, []byte, error) {
	<-c.closed
	return 0, nil, io.EOF
}
func (c *idleConn) WriteMessages([]relay.Message, time.Time) error { return nil }
func (c *idleConn) Ping(time.Time) error                           { return nil }
func (c *idleConn) Close(relay.CloseCode, string) error            { c.Abort(); return nil }
func (c *idleConn) Abort() {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
}

func relayWithConns(tb testing.TB, n int) *relay.Server {
	rs, err := relay.NewServer(relay.Config{PingInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		go rs.Accept(context.Background(), &idleConn{closed: make(chan struct{})}, relay.Info{
			Topic: fmt.Sprintf("t%d", i%100), Prefix: "session", CanRead: true, Scopes: []string{"read"},
			Identity: relay.Identity{BookingID: fmt.Sprintf("b%d", i), Subject: "user"}, RemoteAddr: "127.0.0.1:40000", UserAgent: "bench",
			ExpiresAt: time.Now().Add(time.Hour),
		})
	}
	wait.For(tb, "connections registered", func() bool { return rs.Stats().Connections == n })
	tb.Cleanup(func() { rs.Shutdown(context.Background()) })
	return rs
}

func TestReportJSON(t *testing.T) {
	rs := relayWithConns(t, 3)
	var got []ConnReport
	b, _ := json.Marshal(Report(rs))
	if err := json.Unmarshal(b, &got); err != nil || len(got) != 3 || got[0].Prefix != "session" {
		t.Fatalf("%s: %v", b, err)
	}
}

// BenchmarkStatus10k measures building and encoding the status report of
// 10,000 connections.
func BenchmarkStatus10k(b *testing.B) {
	rs := relayWithConns(b, 10_000)
	b.ResetTimer()
	for b.Loop() {
		json.NewEncoder(io.Discard).Encode(Report(rs))
	}
}
