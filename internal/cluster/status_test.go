package cluster_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/cluster"
	"github.com/switchboard-hub/switchboard/internal/cluster/membus"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// TestStatusExchangeGathersEveryMember: three nodes each answer with their
// own summary; a node whose answer does not come within the timeout is
// reported with an error (and does not hold up the others); a node that
// leaves is no longer asked and is listed as lost until it comes back.
func TestStatusExchangeGathersEveryMember(t *testing.T) {
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var changes atomic.Int64
	hang := make(chan struct{})
	defer close(hang)
	var cHangs atomic.Bool
	exchanges := map[string]*cluster.StatusExchange{}
	buses := map[string]cluster.Bus{}
	join := func(id string) {
		bus, err := network.Join(id)
		if err != nil {
			t.Fatal(err)
		}
		local := func() ([]byte, error) {
			if id == "c" && cHangs.Load() {
				<-hang
			}
			return []byte(`{"node":"` + id + `"}`), nil
		}
		x, err := cluster.NewStatusExchange(cluster.StatusConfig{Bus: bus, Local: local, Timeout: 200 * time.Millisecond,
			OnMembers: func() { changes.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		exchanges[id], buses[id] = x, bus
		t.Cleanup(func() { x.Close(); bus.Close() })
	}
	join("a")
	join("b")
	join("c")
	a := exchanges["a"]

	got := a.Gather(context.Background())
	if len(got) != 3 {
		t.Fatalf("gathered %d answers, want 3: %+v", len(got), got)
	}
	for i, id := range []string{"a", "b", "c"} {
		if got[i].Member.ID != id || got[i].Err != nil || string(got[i].Summary) != `{"node":"`+id+`"}` {
			t.Fatalf("answer %d: %+v (%s)", i, got[i], got[i].Summary)
		}
	}

	// c stops answering: its part times out, the others' arrive.
	cHangs.Store(true)
	start := time.Now()
	got = a.Gather(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gather took %v with a member not answering (timeout 200 ms)", d)
	}
	if got[2].Member.ID != "c" || got[2].Summary != nil || !errors.Is(got[2].Err, context.DeadlineExceeded) {
		t.Fatalf("the silent member: %+v", got[2])
	}
	if got[1].Err != nil || string(got[1].Summary) != `{"node":"b"}` {
		t.Fatalf("b behind a silent member: %+v", got[1])
	}
	cHangs.Store(false)

	// b leaves: it is not asked any more, and it is lost until it rejoins.
	before := changes.Load()
	exchanges["b"].Close()
	buses["b"].Close()
	wait.For(t, "b lost on a", func() bool { l := a.Lost(); return len(l) == 1 && l[0].Member.ID == "b" })
	if changes.Load() == before {
		t.Error("OnMembers was not called when b left")
	}
	got = a.Gather(context.Background())
	if len(got) != 2 || got[0].Member.ID != "a" || got[1].Member.ID != "c" {
		t.Fatalf("after b left: %+v", got)
	}
	join("b")
	wait.For(t, "b back on a", func() bool { return len(a.Lost()) == 0 && len(a.Gather(context.Background())) == 3 })
}

// TestStatusExchangeForgetsLostMembers: a member that went down is listed
// for RememberLost only.
func TestStatusExchangeForgetsLostMembers(t *testing.T) {
	network, err := membus.NewNetwork(membus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	a, _ := network.Join("a")
	b, _ := network.Join("b")
	defer a.Close()
	x, err := cluster.NewStatusExchange(cluster.StatusConfig{Bus: a, Local: func() ([]byte, error) { return []byte(`{}`), nil },
		RememberLost: time.Minute, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	b.Close()
	wait.For(t, "b lost", func() bool { return len(x.Lost()) == 1 })
	now.Add(int64(59 * time.Second))
	if len(x.Lost()) != 1 {
		t.Fatal("b forgotten before a minute")
	}
	now.Add(int64(time.Second))
	if l := x.Lost(); len(l) != 0 {
		t.Fatalf("b still lost after a minute: %+v", l)
	}
}
