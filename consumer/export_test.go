package consumer

import "time"

// SetStoreCallTimeout shortens storeCallTimeout for a test; call the
// returned function to restore it.
func SetStoreCallTimeout(d time.Duration) (restore func()) {
	old := storeCallTimeout
	storeCallTimeout = d
	return func() { storeCallTimeout = old }
}
