//go:build !race

package server

// raceEnabled: the tests run without the race detector.
const raceEnabled = false
