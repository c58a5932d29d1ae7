//go:build unix

package testenv

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

const (
	lockShared      = syscall.LOCK_SH
	lockExclusiveNB = syscall.LOCK_EX | syscall.LOCK_NB
	lockUnlock      = syscall.LOCK_UN
	lockSharedNB    = syscall.LOCK_SH | syscall.LOCK_NB
)

var errWouldBlock = syscall.EWOULDBLOCK

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		return nil
	}
}

// killProcess sends SIGKILL to pid and reports whether it could.
func killProcess(pid int) bool { return syscall.Kill(pid, syscall.SIGKILL) == nil }
