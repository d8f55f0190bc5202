package client

import (
	"context"
	"net"
	"strings"
	"testing"
)

// TestDialErrorHidesCode: a failed dial never shows the one-time code.
func TestDialErrorHidesCode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: the dial is refused
	_, err = DialURI(context.Background(), "ws://"+addr+"/session/x?code=SECRETCODE.n1", nil)
	if err == nil || strings.Contains(err.Error(), "SECRETCODE") {
		t.Fatalf("error %v", err)
	}
}
