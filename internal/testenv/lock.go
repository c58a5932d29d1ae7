package testenv

import (
	"errors"
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

// lockSetup takes the shared lock of setup for t's lifetime.
func lockSetup(t testing.TB, setup string) *setupLock {
	t.Helper()
	path := filepath.Join(os.TempDir(), "uuidforge-"+setup+".lock")
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
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
