package main

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// faultKind names a kind of fault in the faults line of a scenario.
type faultKind string

const (
	connKill      faultKind = "rabbitmq_connection_kills"
	consumerKill  faultKind = "consumer_sigkills"
	relayKill     faultKind = "relay_sigkills"
	kafkaRestart  faultKind = "kafka_restarts"
	pgRestart     faultKind = "postgres_restarts"
	republishKind faultKind = "republish"
)

// fault is one planned fault, injected when the run has got as far as at: a
// fraction of the producer's work (gated faults) or of the effects applied
// (consume faults).
type fault struct {
	kind faultKind
	name string
	at   float64
	do   func(context.Context) error
	// meanwhile lets the work a gate holds back go on while the fault is
	// injected, rather than after: for a fault that lasts (a server
	// restart) and that the producer itself must live through.
	meanwhile bool
	tried     atomic.Bool
	ok        atomic.Bool
}

// fire injects f; a failure is reported, and the fault then counts as
// missed (which fails the run).
func (e *env) fire(ctx context.Context, f *fault) {
	f.tried.Store(true)
	if err := f.do(ctx); err != nil {
		if ctx.Err() == nil {
			e.warnf("fault %q failed: %v", f.name, err)
		}
		return
	}
	f.ok.Store(true)
}

// tally counts the injected faults by kind and lists the planned ones that
// were not injected.
func tally(faults ...[]*fault) (counts map[faultKind]int64, missed []string) {
	counts = map[faultKind]int64{}
	for _, fs := range faults {
		for _, f := range fs {
			if f.ok.Load() {
				counts[f.kind]++
			} else {
				missed = append(missed, f.name)
			}
		}
	}
	return counts, missed
}

// allTried reports whether every fault was attempted.
func allTried(faults []*fault) bool {
	for _, f := range faults {
		if !f.tried.Load() {
			return false
		}
	}
	return true
}

// gate injects faults as a producer's work passes their thresholds and holds
// back the work past a threshold until its fault was injected, so that each
// fault lands while the work before it is still in flight.
type gate struct {
	faults     []*fault
	thresholds []int64
	fired      atomic.Int64
}

func newGate(faults []*fault, total int64) *gate {
	g := &gate{faults: faults}
	for _, f := range faults {
		g.thresholds = append(g.thresholds, int64(math.Ceil(f.at*float64(total))))
	}
	return g
}

// run fires the faults in order as claimed (the work handed out so far)
// passes their thresholds, until ctx ends.
func (g *gate) run(ctx context.Context, e *env, claimed func() int64) {
	for k, f := range g.faults {
		for claimed() < g.thresholds[k] {
			if !sleep(ctx, 2*time.Millisecond) {
				return
			}
		}
		if f.meanwhile {
			g.fired.Store(int64(k + 1))
		}
		e.fire(ctx, f)
		g.fired.Store(int64(k + 1))
	}
}

// wait blocks the work that starts at start until every fault whose
// threshold it passed was injected; false when ctx ended.
func (g *gate) wait(ctx context.Context, start int64) bool {
	var need int64
	for _, t := range g.thresholds {
		if t <= start {
			need++
		}
	}
	for g.fired.Load() < need {
		if !sleep(ctx, 2*time.Millisecond) {
			return false
		}
	}
	return true
}

// fireAsApplied injects faults in order as progress (the effects applied)
// passes their share of total.
func (e *env) fireAsApplied(ctx context.Context, faults []*fault, total int64, progress func(context.Context) (int64, error)) {
	for _, f := range faults {
		want := int64(math.Ceil(f.at * float64(total)))
		for {
			n, err := progress(ctx)
			if err == nil && n >= want {
				break
			}
			if !sleep(ctx, 20*time.Millisecond) {
				return
			}
		}
		e.fire(ctx, f)
	}
}

// faultsDDL creates the faults table of a scenario.
func faultsDDL(t tables) string {
	return fmt.Sprintf(`CREATE TABLE %s (
		kind       text        NOT NULL,
		role       text        NOT NULL,
		message_id uuid        NOT NULL,
		worker     int         NOT NULL,
		at         timestamptz NOT NULL DEFAULT clock_timestamp())`, t.faults())
}

// countFaults reads the handler failures, the panics among them and the
// distinct messages dropped on purpose.
func countFaults(ctx context.Context, e *env, t tables, failures, panics, dropped *int64) error {
	err := e.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE kind <> 'drop'), count(*) FILTER (WHERE kind = 'panic'), count(DISTINCT message_id) FILTER (WHERE kind = 'drop') FROM "+t.faults()).
		Scan(failures, panics, dropped)
	if err != nil {
		return fmt.Errorf("count faults: %w", err)
	}
	return nil
}
