//go:build !race

package chain_test

// raceEnabled: see race_on_test.go.
const raceEnabled = false
