package bench

import (
	"context"
	"testing"
	"time"
)

func TestDeny(t *testing.T) {
	srv, secret := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Deny(ctx, DenyOptions{URL: srv.PublicURL(), Secret: secret, Conns: 60, Denied: 10, Topics: 3, StatusRuns: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Closed4003 != 10 || res.NotClosed != 0 || res.WronglyClosed != 0 {
		t.Fatalf("result %+v", res)
	}
	if res.DisconnectMS.Max <= 0 || res.DisconnectMS.Max > 10_000 || res.StatusBytes == 0 {
		t.Fatalf("timings %+v", res)
	}
	if _, err := Deny(ctx, DenyOptions{URL: srv.PublicURL(), Secret: secret, Conns: 5, Denied: 6}); err == nil {
		t.Fatal("more denied than connections accepted")
	}
	if _, err := Deny(ctx, DenyOptions{URL: "http://192.0.2.1:80", Secret: secret}); err == nil {
		t.Fatal("non-loopback URL accepted")
	}
}
