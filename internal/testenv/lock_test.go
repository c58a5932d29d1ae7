package testenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestSetupLockExclusiveWaitsForShared checks that a test asking for exclusive
// use of a setup gets it only once the other users have released it.
func TestSetupLockExclusiveWaitsForShared(t *testing.T) {
	setup := Name(t, "lock")
	t.Cleanup(func() { os.Remove(filepath.Join(os.TempDir(), "uuidforge-"+setup+".lock")) })
	other := lockSetup(t, setup)
	mine := lockSetup(t, setup)
	var released atomic.Bool
	go func() {
		time.Sleep(200 * time.Millisecond)
		released.Store(true)
		other.f.Close()
	}()
	mine.exclusive(t, setup)
	if !released.Load() {
		t.Fatal("exclusive use granted while another test held the setup")
	}
}

// TestHoldSetup checks that a program's exclusive hold waits for the tests
// using the setup, and that tests and other holders wait for it.
func TestHoldSetup(t *testing.T) {
	if _, err := HoldSetup(context.Background(), "no-such-setup"); err == nil {
		t.Error("HoldSetup accepted an unknown setup")
	}
	setup := Name(t, "hold")
	t.Cleanup(func() { os.Remove(filepath.Join(os.TempDir(), "uuidforge-"+setup+".lock")) })
	test := lockSetup(t, setup) // a test using the setup
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	if r, err := holdSetup(short, setup); err == nil {
		r()
		t.Fatal("exclusive hold granted while a test used the setup")
	}
	test.f.Close()
	release, err := holdSetup(context.Background(), setup)
	if err != nil {
		t.Fatal(err)
	}
	short2, cancelShort2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort2()
	if r, err := holdSetup(short2, setup); err == nil {
		r()
		t.Fatal("a second exclusive hold was granted while the first was held")
	}
	f, err := openLock(setup)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(f, lockSharedNB); !errors.Is(err, errWouldBlock) {
		t.Fatalf("a test's shared lock was not refused while the program held the setup: %v", err)
	}
	release()
	if err := flock(f, lockSharedNB); err != nil {
		t.Fatalf("shared lock after release: %v", err)
	}
}

// TestTwoDisruptors: two tests that both use a setup and both want to
// disrupt it get exclusive use one after the other — never at once, and
// without waiting for each other for ever (each holds the use lock shared
// while it asks).
func TestTwoDisruptors(t *testing.T) {
	setup := Name(t, "two")
	t.Cleanup(func() {
		os.Remove(filepath.Join(os.TempDir(), "uuidforge-"+setup+".lock"))
		os.Remove(filepath.Join(os.TempDir(), "uuidforge-"+setup+"-disrupt.lock"))
	})
	var inside, overlaps atomic.Int32
	done := make(chan struct{}, 2)
	for range 2 {
		l := lockSetup(t, setup)
		go func() {
			defer func() { done <- struct{}{} }()
			l.exclusive(t, setup)
			if inside.Add(1) > 1 {
				overlaps.Add(1)
			}
			time.Sleep(100 * time.Millisecond) // disrupting
			inside.Add(-1)
			l.f.Close()
			l.disrupt.Close()
		}()
	}
	for range 2 {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("two disruptors waited for each other")
		}
	}
	if overlaps.Load() != 0 {
		t.Fatal("two disruptors had exclusive use at once")
	}
}
