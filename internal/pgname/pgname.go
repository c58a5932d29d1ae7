// Package pgname holds what the PostgreSQL packages (dedupe/pgstore,
// outbox/pgoutbox) share about naming their tables and talking durations
// to the database: table names checked as plain identifiers, the names of
// things named after a table kept within PostgreSQL's 63 bytes, durations
// in whole microseconds, and the janitor loop.
package pgname

import (
	"context"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"
)

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// ParseTable splits a table name, "name" or "schema.name", into its parts,
// each a plain identifier of at most 63 bytes (letters, digits and
// underscores, not starting with a digit); anything else is an error, so a
// name never needs quoting beyond pgx.Identifier and never carries SQL.
func ParseTable(name string) ([]string, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("table %q: want name or schema.name", name)
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			return nil, fmt.Errorf("table %q: %q is not a plain identifier of at most 63 bytes (letters, digits, _)", name, p)
		}
	}
	return parts, nil
}

// Aux returns the name of something named after a table (a sequence, an
// index, a notification channel): name_suffix, shortened with a hash of
// the full name when it would pass PostgreSQL's 63-byte limit (which would
// otherwise truncate it silently and could make two names one).
func Aux(name, suffix string) string {
	n := name + "_" + suffix
	if len(n) <= 63 {
		return n
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	tail := fmt.Sprintf("_%08x_%s", h.Sum32(), suffix)
	return name[:63-len(tail)] + tail
}

// Micros returns d in whole microseconds, rounded up (PostgreSQL's
// interval resolution), so that no positive duration becomes zero.
func Micros(d time.Duration) int64 {
	us := d / time.Microsecond
	if d%time.Microsecond != 0 {
		us++
	}
	return int64(us)
}

// Janitor calls clean every interval until ctx is done, passing its errors
// (except those after ctx ended) to onError when it is not nil.
func Janitor(ctx context.Context, every time.Duration, clean func(context.Context) error, onError func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := clean(ctx); err != nil && ctx.Err() == nil && onError != nil {
			onError(err)
		}
	}
}
