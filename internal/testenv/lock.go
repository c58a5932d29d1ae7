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
// holds it shared for its whole run, and a test that disrupts the setup
// (stops a node, kills a primary) converts it to exclusive first, so that it
// waits for the others to finish and no other test starts until it has put
// the setup back. Locks are flock(2) locks on files in the temporary
// directory, released when the test ends or its process dies.
type setupLock struct {
	f    *os.File
	excl bool
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

// exclusive converts the lock to exclusive, waiting at most exclusiveWait.
func (l *setupLock) exclusive(t testing.TB, setup string) {
	t.Helper()
	if l.excl {
		return
	}
	deadline := time.Now().Add(exclusiveWait)
	for {
		err := flock(l.f, lockExclusiveNB)
		if err == nil {
			l.excl = true
			return
		}
		if !errors.Is(err, errWouldBlock) {
			t.Fatalf("testenv: lock %s: %v", setup, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: waited %v for exclusive use of %s: other tests (or this test's parent, which must not take the setup itself) keep using it", exclusiveWait, setup)
		}
		time.Sleep(50 * time.Millisecond)
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
	for {
		err := flock(f, lockExclusiveNB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, errWouldBlock) {
			f.Close()
			return nil, fmt.Errorf("testenv: lock %s: %w", setup, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("testenv: waiting for exclusive use of %s: %w", setup, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
