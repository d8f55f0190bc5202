//go:build race

package wsconn

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts are only asserted in builds without it (make test runs
// the allocation tests once more without -race).
const raceEnabled = true
