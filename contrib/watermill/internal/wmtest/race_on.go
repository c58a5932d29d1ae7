//go:build race

package wmtest

const raceEnabled = true
