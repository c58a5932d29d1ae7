//go:build race

package main

// raceEnabled: the tests run with -race, so the program they run is built
// with it too.
const raceEnabled = true
