//go:build race

package server

// raceEnabled: the tests run with the race detector; commands they build
// are built with it too.
const raceEnabled = true
