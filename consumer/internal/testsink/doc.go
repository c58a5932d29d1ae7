// Package testsink gives the consumer tests a handler whose effect is one
// PostgreSQL row per message ID (the primary key), a way to count the rows
// and the double effects, a chaos wrapper that fails and panics, and a
// store wrapper that simulates an outage around a real store.
package testsink
