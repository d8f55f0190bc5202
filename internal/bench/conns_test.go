package bench

import (
	"context"
	"testing"
	"time"
)

func TestConns(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Conns(ctx, ConnsOptions{URL: srv.PublicURL(), Secret: secret, Conns: 50, Sources: 3, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 50 || res.HandshakesPerSec <= 0 || res.GoroutinesHeld < res.GoroutinesBefore+50 {
		t.Fatalf("result %+v", res)
	}
	if srv.Relay().Stats().Connections != 50 && srv.Relay().Stats().Accepted < 50 {
		t.Fatalf("server saw %+v", srv.Relay().Stats())
	}
	if _, err := Conns(ctx, ConnsOptions{URL: srv.PublicURL(), Secret: secret, Conns: 1 << 30}); err == nil {
		t.Fatal("more connections than file descriptors accepted")
	}
}
