package client

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/pkg/wire"
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

// TestCloseNames: every close of the contract is named (4004 and 4009 once
// were not), and a close error says how to reconnect.
func TestCloseNames(t *testing.T) {
	for code, want := range map[int]string{4004: "host unavailable", 4009: "superseded", 4001: "token expired", 1006: "abnormal closure", 4999: "unknown", -1: "unknown", 70000: "unknown"} {
		if got := CloseCodeName(code); got != want {
			t.Errorf("CloseCodeName(%d) = %q, want %q", code, got, want)
		}
	}
	e := &CloseError{Code: wire.CloseSuperseded, Reason: "another host connected"}
	if got := e.Error(); got != "client: connection closed with 4009 (superseded): another host connected" {
		t.Errorf("Error() = %q", got)
	}
	if e.Code.Reconnect() != wire.ReconnectNever {
		t.Errorf("4009 advises %v, want never", e.Code.Reconnect())
	}
}
