// Package bench compares the consumer's dedupe middleware with Watermill's
// Deduplicator middleware on the same in-process handler and messages. It is
// a separate module so that Watermill never enters the main module's
// dependencies.
//
//	cd bench && go test -run '^$' -bench . -benchmem
package bench
