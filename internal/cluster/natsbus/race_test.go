//go:build race

package natsbus

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts are only asserted in builds without it.
const raceEnabled = true
