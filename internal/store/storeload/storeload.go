// Package storeload puts a bounded write load of audited revocations on a
// store.Store and measures it; `switchboard bench store` reports it.
//
// Each writer goroutine repeats one kind of call until the load ends: with
// Batch <= 1, Revoke of a new token with one audit event; with Batch > 1,
// AppendAudit of Batch events. Every call is one transaction; Ops counts
// audited writes (revocations or events), latencies are per call.
package storeload

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-hub/switchboard/internal/store"
)

// Options bound the load. The zero value runs one writer, Batch 1, for 10s.
type Options struct {
	Writers  int           // concurrent writers; zero means 1
	Batch    int           // audit events per AppendAudit; <= 1 means Revoke calls
	Duration time.Duration // stop after this long; zero means 10s, unless MaxOps is set
	MaxOps   int           // stop after this many audited writes; zero means no limit
}

// Result describes a finished load.
type Result struct {
	Ops       int           // audited writes committed
	Calls     int           // store calls (transactions) committed
	Elapsed   time.Duration // wall time of the load
	OpsPerSec float64       // Ops / Elapsed
	P50, P99  time.Duration // per-call latency percentiles
	Max       time.Duration // slowest call
}

func (r Result) String() string {
	return fmt.Sprintf("%d audited writes in %d calls, %v: %.0f writes/s, latency p50 %v p99 %v max %v",
		r.Ops, r.Calls, r.Elapsed.Round(time.Millisecond), r.OpsPerSec, r.P50, r.P99, r.Max)
}

// Run runs the load on s until Duration passes, MaxOps writes are done, or
// ctx ends. It returns the first error a store call returns (ctx ending is
// not an error), together with what was measured until then. The
// revocations it writes expire after an hour; the audit events stay.
func Run(ctx context.Context, s store.Store, opts Options) (Result, error) {
	writers := max(opts.Writers, 1)
	batch := max(opts.Batch, 1)
	dur := opts.Duration
	if dur <= 0 && opts.MaxOps <= 0 {
		dur = 10 * time.Second
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if dur > 0 {
		var cancelT context.CancelFunc
		runCtx, cancelT = context.WithTimeout(runCtx, dur)
		defer cancelT()
	}

	// Writers claim work before each call, so MaxOps is never exceeded.
	var claimed atomic.Int64
	claim := func() int {
		n := batch
		if opts.MaxOps > 0 {
			end := claimed.Add(int64(batch))
			if over := end - int64(opts.MaxOps); over > 0 {
				n -= int(over)
			}
		}
		return max(n, 0)
	}

	run := time.Now().UnixNano() // distinct values across runs on one store
	lat := make([][]time.Duration, writers)
	ops := make([]int, writers)
	var (
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			evs := make([]store.AuditEvent, 0, batch)
			for i := 0; runCtx.Err() == nil; i++ {
				n := claim()
				if n == 0 {
					return
				}
				v := fmt.Sprintf("load-%x-%d-%d", run, w, i)
				t := time.Now()
				var err error
				if batch == 1 {
					_, err = s.Revoke(runCtx,
						store.Revocation{Kind: store.RevokeToken, Value: v, Reason: "storeload", Actor: "storeload", ExpiresAt: t.Add(time.Hour)},
						store.AuditEvent{Actor: "storeload", Action: "revoke", Target: "token:" + v, Reason: "storeload"})
				} else {
					evs = evs[:0]
					for j := range n {
						evs = append(evs, store.AuditEvent{Actor: "storeload", Action: "token.mint", Target: fmt.Sprintf("token:%s-%d", v, j)})
					}
					_, err = s.AppendAudit(runCtx, evs...)
				}
				d := time.Since(t)
				if err != nil {
					if runCtx.Err() != nil {
						return // the load ended during the call
					}
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				lat[w] = append(lat[w], d)
				ops[w] += n
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	r := Result{Elapsed: elapsed}
	var all []time.Duration
	for w := range writers {
		r.Ops += ops[w]
		all = append(all, lat[w]...)
	}
	r.Calls = len(all)
	if elapsed > 0 {
		r.OpsPerSec = float64(r.Ops) / elapsed.Seconds()
	}
	if len(all) > 0 {
		slices.Sort(all)
		r.P50 = percentile(all, 0.50)
		r.P99 = percentile(all, 0.99)
		r.Max = all[len(all)-1]
	}
	return r, firstErr
}

// percentile returns the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
