package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proc supervises one worker process: this program run again with the
// worker sub-command and a role, so that a fault can kill it with SIGKILL
// like any crashing service. Each start gets a new number (the "worker"
// column of the rows it writes). Safe for concurrent use.
type proc struct {
	e    *env
	name string                     // "consumer", "relay 1", ...
	cfg  func(gen int) workerConfig // the configuration of the next start

	mu  sync.Mutex // held while starting, killing or stopping
	cur *procRun

	pmu      sync.Mutex
	problems []string // processes that crashed, failed a race check or hung
}

// procRun is one started process.
type procRun struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	done    chan struct{}
	gen     int
	ending  atomic.Bool // set before the coordinator stops or kills it
	waitErr error       // valid after done
}

func (e *env) newProc(name string, cfg func(gen int) workerConfig) *proc {
	return &proc{e: e, name: name, cfg: cfg}
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *proc) startLocked() error {
	gen := int(p.e.gen.Add(1))
	cfg := p.cfg(gen)
	cmd := exec.Command(p.e.exe, append([]string{workerCommand}, cfg.args()...)...)
	cmd.Env = append(os.Environ(), cfg.env()...)
	cmd.Stdout, cmd.Stderr = p.e.errOut, p.e.errOut
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	r := &procRun{cmd: cmd, stdin: stdin, done: make(chan struct{}), gen: gen}
	go func() {
		r.waitErr = cmd.Wait()
		if !r.ending.Load() {
			p.problem(fmt.Errorf("%s process %d (worker #%d) exited by itself: %v", p.name, cmd.Process.Pid, r.gen, r.waitErr))
		}
		close(r.done)
	}()
	p.cur = r
	p.e.logf("%s process %d started (worker #%d)", p.name, cmd.Process.Pid, gen)
	return nil
}

// kill kills the process with SIGKILL, mid-work, and starts a new one.
func (p *proc) kill(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.cur
	if r == nil {
		return fmt.Errorf("no %s process", p.name)
	}
	r.ending.Store(true)
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	<-r.done
	p.e.logf("fault: %s process %d (worker #%d) killed with SIGKILL", p.name, r.cmd.Process.Pid, r.gen)
	return p.startLocked()
}

// stop stops the process gracefully (it finishes the work in progress),
// killing it after 30 s.
func (p *proc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.cur
	if r == nil {
		return
	}
	p.cur = nil
	r.ending.Store(true)
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	_ = r.stdin.Close()
	select {
	case <-r.done:
		// Killed by the SIGTERM itself: it came before the process
		// installed its handler, while starting, with nothing to finish.
		ws, _ := r.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if r.waitErr != nil && !(ws.Signaled() && ws.Signal() == syscall.SIGTERM) {
			p.problem(fmt.Errorf("%s process %d (worker #%d) did not stop cleanly: %v", p.name, r.cmd.Process.Pid, r.gen, r.waitErr))
		}
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		p.problem(fmt.Errorf("%s process %d (worker #%d) did not stop within 30s", p.name, r.cmd.Process.Pid, r.gen))
	}
}

// problem records a process that crashed, failed a race check or hung: the
// scenario then fails whatever the counts say.
func (p *proc) problem(err error) {
	p.pmu.Lock()
	p.problems = append(p.problems, err.Error())
	p.pmu.Unlock()
	p.e.warnf("%v", err)
}

// procProblems collects the problems of procs.
func procProblems(procs []*proc) []string {
	var out []string
	for _, p := range procs {
		p.pmu.Lock()
		out = append(out, p.problems...)
		p.pmu.Unlock()
	}
	return out
}

// backlog is what the workers of a scenario still have to do.
type backlog struct {
	applied int64 // distinct messages applied (or dropped on purpose)
	queue   int64 // messages ready in the queue
	lag     int64 // records of the topic not committed by the group
	pending int64 // outbox records not dispatched yet
}

func (b backlog) empty() bool { return b.queue == 0 && b.lag == 0 && b.pending == 0 }

// drain waits until want messages were applied, every consume fault was
// tried and nothing is left in the queues, then stops the processes and
// reads the backlog again with nothing in flight, starting them once more
// if work reappeared (3 rounds at most). Processes that make no progress
// for 20 s are replaced.
func (e *env) drain(ctx context.Context, procs []*proc, faults []*fault, want int64, read func(context.Context) (backlog, error)) (backlog, error) {
	const stall = 20 * time.Second
	startAll := func() error {
		for _, p := range procs {
			if err := p.start(); err != nil {
				return err
			}
		}
		return nil
	}
	stopAll := func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(p.stop)
		}
		wg.Wait()
	}
	for round := 1; ; round++ {
		last, lastChange := backlog{applied: -1}, time.Now()
		for {
			b, err := read(ctx)
			if err == nil {
				if allTried(faults) && b.applied >= want && b.empty() {
					break
				}
				if b != last {
					last, lastChange = b, time.Now()
				}
			}
			if time.Since(lastChange) > stall {
				e.logf("no progress for %v (%+v): replacing the worker processes", stall, last)
				stopAll()
				if err := startAll(); err != nil {
					return last, err
				}
				lastChange = time.Now()
			}
			if !sleep(ctx, 100*time.Millisecond) {
				return last, fmt.Errorf("timed out waiting for the workers (%+v): %w", last, ctx.Err())
			}
		}
		stopAll()
		b, err := read(ctx)
		if err != nil {
			return b, err
		}
		if b.empty() || round == 3 {
			e.logf("workers stopped: %d messages applied, %d left in the queue, %d records not committed, %d outbox records pending", b.applied, b.queue, b.lag, b.pending)
			return b, nil
		}
		e.logf("after stopping the workers, %+v: working again", b)
		if err := startAll(); err != nil {
			return b, err
		}
	}
}
