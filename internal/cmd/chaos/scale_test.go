//go:build chaosscale

package main

// The scale scenario's runs. They need the clustered setups of
// scripts/clusters.sh, take exclusive use of the Redis Cluster and the
// RabbitMQ cluster (waiting for, then holding off, every other test that
// uses them) and last half a minute to a minute each, so they are not part
// of make test, whose budget they would not fit; make chaos-scale runs
// them:
//
//	FORGE_REQUIRE_SERVICES=1 go test -race -tags chaosscale -run Scale ./internal/cmd/chaos

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// runScaleProgram runs the scale scenario alone and checks that it printed its
// lines.
func runScaleProgram(t *testing.T, args ...string) outcome {
	t.Helper()
	o := runProgram(t, 4*time.Minute, append([]string{"-n", "0", "-orders", "0"}, args...)...)
	o.wantLines(t, false, false)
	if o.scale == nil {
		t.Fatal("no chaos-scale line")
	}
	return o
}

// TestScaleShort runs 1000 messages through two forwarders and two
// appliers: every count must be right, every kind of fault must have
// happened and the appliers' group must have rebalanced.
func TestScaleShort(t *testing.T) {
	const n = 1000
	o := runScaleProgram(t, "-scale", strconv.Itoa(n), "-procs", "2", "-seed", "13")
	if o.code != 0 {
		t.Errorf("exit status %d, want 0", o.code)
	}
	want := map[string]int64{"processes": 2, "messages": n, "effects": n, "duplicates": 0, "lost": 0}
	for k, v := range want {
		if o.scale[k] != v {
			t.Errorf("%s = %d, want %d", k, o.scale[k], v)
		}
	}
	if o.scale["rebalances"] < 1 {
		t.Errorf("rebalances = %d, want at least 1", o.scale["rebalances"])
	}
	f := o.scaleFaults
	if sum := f["extra_copies"] + f["handler_failures"] + f["sigkills"] + f["scale_outs"] + f["scale_ins"] + f["node_stops"] + f["primary_kills"] + f["leader_moves"]; sum != o.scale["faults"] {
		t.Errorf("faults = %d, but the breakdown sums to %d", o.scale["faults"], sum)
	}
	if f["extra_copies"] < n || f["handler_failures"] < n/10 || f["panics"] == 0 {
		t.Errorf("extra copies %d, handler failures %d (panics %d): too few injected", f["extra_copies"], f["handler_failures"], f["panics"])
	}
	if f["sigkills"] != 4 || f["scale_outs"] != 1 || f["scale_ins"] != 1 || f["node_stops"] != 1 || f["primary_kills"] != 1 ||
		f["leader_moves"] != 2*6*scalePartitions || f["dropped"] != 0 || f["forgotten"] != 0 {
		t.Errorf("faults %v: want 4 SIGKILLs, a scale-out and a scale-in, a node stop, a primary kill, %d leader moves", f, 2*6*scalePartitions)
	}
	c := o.scaleChecks
	if c["rows"] != n || c["distinct"] != n || c["unexpected"] != 0 || c["mismatched"] != 0 || c["forwarded_twice"] != 0 ||
		c["recheck_answered"] != n || c["recheck_forwarded"] != 0 || c["replay_new"] != 0 || c["left_in_queue"] != 0 || c["dead_letters"] != 0 {
		t.Errorf("checks: %v", c)
	}
	// Each delivery of the n messages and their copies ended processed or
	// duplicate (a killed forwarder loses its last records), and the
	// recheck answered every message duplicate.
	if got, all := c["forward_processed"]+c["forward_duplicates"], n+f["extra_copies"]+n; got > all*11/10 || got < all*9/10 {
		t.Errorf("forwarders settled %d deliveries, want about %d", got, all)
	}
	if c["replayed"] < n {
		t.Errorf("replay read %d records, want at least %d", c["replayed"], n)
	}
}

// TestScaleCatchesDuplicates runs without the dedupe middleware: every
// message is published at least twice, so every one must be forwarded
// twice and applied more than once, and the program must fail. This is what
// makes a passing TestScaleShort mean something.
func TestScaleCatchesDuplicates(t *testing.T) {
	const n = 300
	o := runScaleProgram(t, "-scale", strconv.Itoa(n), "-procs", "2", "-seed", "17", "-no-dedupe")
	if o.code != 1 {
		t.Errorf("exit status %d, want 1", o.code)
	}
	if o.scale["duplicates"] != n || o.scale["lost"] != 0 || o.scale["effects"] < 2*n {
		t.Errorf("final counts %v: want duplicates=%d lost=0 effects>=%d", o.scale, n, 2*n)
	}
	if o.scaleChecks["forwarded_twice"] != n || o.scaleChecks["recheck_forwarded"] < n || o.scaleChecks["replay_new"] == 0 {
		t.Errorf("checks %v: want every message forwarded twice and again after the run, and the replay adding effects", o.scaleChecks)
	}
	if !strings.Contains(o.stderr, "FAILED") {
		t.Errorf("no FAILED explanation on stderr")
	}
}

// TestScaleCatchesLostCompletions deletes the Redis store's records halfway
// (what a failover that lost the completions would do): the copies still to
// come are forwarded again. The PostgreSQL inbox still applies each derived
// message once, so only the forwarders' check can see it, and must.
func TestScaleCatchesLostCompletions(t *testing.T) {
	const n = 1000
	o := runScaleProgram(t, "-scale", strconv.Itoa(n), "-procs", "2", "-seed", "19", "-forget")
	if o.code != 1 {
		t.Errorf("exit status %d, want 1", o.code)
	}
	if o.scaleFaults["forgotten"] == 0 {
		t.Fatalf("nothing forgotten: %v", o.scaleFaults)
	}
	if o.scaleChecks["forwarded_twice"] == 0 {
		t.Errorf("checks %v: the messages forwarded again after the records were lost were not counted", o.scaleChecks)
	}
	if o.scale["effects"] != n || o.scale["duplicates"] != 0 || o.scale["lost"] != 0 {
		t.Errorf("final counts %v: the inbox should still apply each message once", o.scale)
	}
	if !strings.Contains(o.stderr, "completed twice by the forwarders") {
		t.Errorf("stderr does not name the repeated completions")
	}
}

// TestScaleCatchesLoss makes the appliers acknowledge a fifth of the
// messages without their effect: the program must count each of them as
// lost, and fail.
func TestScaleCatchesLoss(t *testing.T) {
	const n = 300
	o := runScaleProgram(t, "-scale", strconv.Itoa(n), "-procs", "2", "-seed", "23", "-drop-share", "0.2")
	if o.code != 1 {
		t.Errorf("exit status %d, want 1", o.code)
	}
	dropped := o.scaleFaults["dropped"]
	if dropped == 0 || o.scale["lost"] != dropped || o.scale["effects"] != n-dropped || o.scale["duplicates"] != 0 {
		t.Errorf("final counts %v with %d dropped: want lost=%[2]d effects=%d duplicates=0", o.scale, dropped, n-dropped)
	}
	if !strings.Contains(o.stderr, "messages never applied") {
		t.Errorf("stderr does not say the messages were never applied")
	}
}
