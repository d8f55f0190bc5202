package storeload_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/internal/store/storeload"
)

func open(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "switchboard.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestMaxOps: the load stops at exactly MaxOps audited writes, all of
// them stored. (A functional test: it measures nothing.)
func TestMaxOps(t *testing.T) {
	for _, c := range []struct{ writers, batch, maxOps int }{
		{4, 1, 203},
		{3, 10, 205}, // not a multiple of the batch: the last call is short
	} {
		s := open(t)
		r, err := storeload.Run(t.Context(), s, storeload.Options{Writers: c.writers, Batch: c.batch, MaxOps: c.maxOps})
		if err != nil {
			t.Fatal(err)
		}
		if r.Ops != c.maxOps {
			t.Errorf("%+v: Ops = %d, want %d", c, r.Ops, c.maxOps)
		}
		if r.Calls == 0 || r.OpsPerSec <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.Max < r.P99 {
			t.Errorf("%+v: implausible result %+v", c, r)
		}
		var n int
		var after int64
		for {
			evs, err := s.Audit(t.Context(), after, time.Time{}, store.MaxAuditLimit)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			n += len(evs)
			after = evs[len(evs)-1].ID
		}
		if n != c.maxOps {
			t.Errorf("%+v: %d audit events stored, want %d", c, n, c.maxOps)
		}
	}
}

// TestDurationAndCancel: the load ends when its duration passes or its
// context is canceled, without reporting an error.
func TestDurationAndCancel(t *testing.T) {
	s := open(t)
	r, err := storeload.Run(t.Context(), s, storeload.Options{Writers: 2, Duration: 50 * time.Millisecond})
	if err != nil || r.Ops == 0 {
		t.Errorf("Run for 50ms = %+v, %v", r, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := storeload.Run(ctx, s, storeload.Options{Writers: 2, Duration: time.Hour}); err != nil {
		t.Errorf("Run with a canceled context: %v", err)
	}
}

// TestStoreError: an error from the store ends the load and is returned.
func TestStoreError(t *testing.T) {
	s := open(t)
	s.Close()
	if _, err := storeload.Run(t.Context(), s, storeload.Options{Writers: 2, MaxOps: 10}); err == nil {
		t.Error("Run on a closed store succeeded")
	}
}
