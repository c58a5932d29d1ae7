//go:build !unix

package testenv

import (
	"errors"
	"os"
)

// Without flock the clustered setups are not coordinated across packages;
// they only run on Unix anyway.
const (
	lockShared      = 0
	lockExclusiveNB = 0
	lockUnlock      = 0
	lockSharedNB    = 0
)

var errWouldBlock = errors.New("would block")

func flock(*os.File, int) error { return nil }

func killProcess(int) bool { return false }
