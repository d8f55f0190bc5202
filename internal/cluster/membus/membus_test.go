package membus

import (
	"fmt"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/bustest"
)

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T, n int, opts bustest.Options) []cluster.Bus {
		net, err := NewNetwork(Options{MaxPendingMsgs: opts.MaxPendingMsgs})
		if err != nil {
			t.Fatal(err)
		}
		buses := make([]cluster.Bus, n)
		for i := range buses {
			b, err := net.Join(fmt.Sprintf("n%d", i+1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			buses[i] = b
		}
		return buses
	})
}

func TestJoinRefusesBadAndDuplicateIDs(t *testing.T) {
	net, err := NewNetwork(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "a.b", "a b", "*", ">"} {
		if _, err := net.Join(id); err == nil {
			t.Errorf("Join(%q) accepted", id)
		}
	}
	b, err := net.Join("n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := net.Join("n1"); err == nil {
		t.Error("a second n1 joined")
	}
	b.Close()
	if b2, err := net.Join("n1"); err != nil {
		t.Errorf("n1 cannot rejoin after it left: %v", err)
	} else {
		b2.Close()
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{{MaxPendingMsgs: -1}, {MaxPendingBytes: -1}} {
		if _, err := NewNetwork(o); err == nil {
			t.Errorf("NewNetwork(%+v) accepted", o)
		}
	}
}
