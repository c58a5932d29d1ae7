package testenv

import (
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
