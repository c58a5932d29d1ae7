package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DropTables drops the tables named (SQL identifiers, quoted as needed:
// pgx.Identifier{name}.Sanitize()) and what depends on them, on a
// connection of its own: the test's pool may be closed by then. Failures
// are test errors.
func DropTables(t testing.TB, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, PostgresURL(t))
	if err != nil {
		t.Errorf("drop %v: %v", names, err)
		return
	}
	defer conn.Close(ctx)
	for _, n := range names {
		if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+n+" CASCADE"); err != nil {
			t.Errorf("drop %s: %v", n, err)
		}
	}
}
