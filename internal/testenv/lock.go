package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// setupLock coordinates the tests of every package that use one clustered
// setup at the same time (go test runs packages in parallel processes): each
// holds the setup's use lock shared for its whole run, and a test that
// disrupts the setup (stops a node, kills a primary) takes it exclusively
// first, so that it waits for the others to finish and no other test starts
// until it has put the setup back.
//
// flock(2) converts a shared lock to an exclusive one by dropping it first,
// and a conversion that would block leaves the caller holding nothing. So a
// disruptor first takes the setup's disrupt lock (one disruptor at a time),
// having let go of its shared use lock — two disruptors each holding the use
// lock shared would otherwise wait for each other for ever — and only then
// takes the use lock exclusively. Locks are on files in the temporary
// directory and are released when the test ends or its process dies.
type setupLock struct {
	f       *os.File // the use lock
	disrupt *os.File // the disrupt lock, once taken
	excl    bool
}

// exclusiveWait bounds the wait for exclusive use: a test waiting on its own
// parent (which holds the shared lock) would otherwise hang.
const exclusiveWait = 5 * time.Minute

// The clustered setups' names, for [HoldSetup].
const (
	SetupRedisCluster  = "redis-cluster"
	SetupSentinel      = "sentinel"
	SetupRabbitCluster = "rabbitmq-cluster"
)

func openLock(setup string) (*os.File, error) {
	return os.OpenFile(filepath.Join(os.TempDir(), "uuidforge-"+setup+".lock"), os.O_RDONLY|os.O_CREATE, 0o644)
}

// lockSetup takes the shared lock of setup for t's lifetime.
func lockSetup(t testing.TB, setup string) *setupLock {
	t.Helper()
	f, err := openLock(setup)
	if err != nil {
		t.Fatalf("testenv: lock %s: %v", setup, err)
	}
	if err := flock(f, lockShared); err != nil {
		f.Close()
		t.Fatalf("testenv: lock %s: %v", setup, err)
	}
	l := &setupLock{f: f}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
	return l
}

// exclusive gives t exclusive use of the setup, waiting at most
// exclusiveWait.
func (l *setupLock) exclusive(t testing.TB, setup string) {
	t.Helper()
	if l.excl {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), exclusiveWait)
	defer cancel()
	_ = flock(l.f, lockUnlock) // see setupLock: never wait while converting
	d, err := takeExclusive(ctx, setup, l.f)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("testenv: waited %v for exclusive use of %s: other tests (or this test's parent, which must not take the setup itself) keep using it", exclusiveWait, setup)
		}
		t.Fatalf("testenv: lock %s: %v", setup, err)
	}
	l.disrupt, l.excl = d, true
	t.Cleanup(func() { d.Close() })
}

// takeExclusive takes setup's disrupt lock and then use exclusively (use
// being the setup's use lock, not held by the caller), waiting until ctx
// ends. It returns the disrupt lock's file, to be closed after use.
func takeExclusive(ctx context.Context, setup string, use *os.File) (*os.File, error) {
	d, err := openLock(setup + "-disrupt")
	if err != nil {
		return nil, err
	}
	for _, f := range []*os.File{d, use} {
		if err := lockWait(ctx, f); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// lockWait takes f exclusively, trying again until ctx ends.
func lockWait(ctx context.Context, f *os.File) error {
	for {
		err := flock(f, lockExclusiveNB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errWouldBlock) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// HoldSetup gives a program (not a test) that disrupts a clustered setup
// (stops a node, kills a primary) exclusive use of it, as the fault methods
// of this package give a test: it waits until no test or program uses the
// setup, and none starts using it until release is called or the process
// ends. setup is [SetupRedisCluster], [SetupSentinel] or
// [SetupRabbitCluster]. It gives up when ctx ends. A test must not call it
// while it holds the setup itself (through [RedisClusterAddrs],
// [RedisSentinel] or [RabbitCluster]), nor start a program that does: it
// would wait for itself. Without flock(2) (not Unix) it locks nothing.
func HoldSetup(ctx context.Context, setup string) (release func(), err error) {
	switch setup {
	case SetupRedisCluster, SetupSentinel, SetupRabbitCluster:
	default:
		return nil, fmt.Errorf("testenv: no clustered setup named %q", setup)
	}
	return holdSetup(ctx, setup)
}

func holdSetup(ctx context.Context, setup string) (release func(), err error) {
	f, err := openLock(setup)
	if err != nil {
		return nil, fmt.Errorf("testenv: lock %s: %w", setup, err)
	}
	d, err := takeExclusive(ctx, setup, f)
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("testenv: waiting for exclusive use of %s: %w", setup, ctx.Err())
		}
		return nil, fmt.Errorf("testenv: lock %s: %w", setup, err)
	}
	return func() { f.Close(); d.Close() }, nil
}
