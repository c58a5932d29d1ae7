package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestClassify: which failures of an inbox transaction are the handler's
// (ErrRolledBack: retried, then dead-lettered) and which are the store's
// (an outage: the message waits without limit).
func TestClassify(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code}) }
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name             string
		ctx              context.Context
		err              error
		commit, complete bool // rolled back at COMMIT, at the completion statement
	}{
		{"deferred foreign key", nil, pg("23503"), true, false},
		{"unique violation", nil, pg("23505"), true, false},
		{"data error", nil, pg("22012"), true, false},
		{"aborted transaction", nil, pg("25P02"), true, true},
		{"pgx rollback on commit", nil, pgx.ErrTxCommitRollback, true, false},
		{"serialization failure", nil, pg("40001"), true, true},
		{"deadlock", nil, pg("40P01"), true, true},
		{"deferred trigger raise", nil, pg("P0001"), true, false},
		{"connection failure", nil, pg("08006"), false, false},
		{"admin shutdown", nil, pg("57P01"), false, false},
		{"crash shutdown", nil, pg("57P02"), false, false},
		{"cannot connect now", nil, pg("57P03"), false, false},
		{"query cancelled", nil, pg("57014"), false, false},
		{"disk full", nil, pg("53100"), false, false},
		{"io error", nil, pg("58030"), false, false},
		{"internal error", nil, pg("XX000"), false, false},
		{"undefined table in our statement", nil, pg("42P01"), true, false},
		{"network", nil, &net.OpError{Op: "read", Err: io.ErrUnexpectedEOF}, false, false},
		{"eof", nil, io.EOF, false, false},
		{"deadline while unreachable", nil, context.DeadlineExceeded, false, false},
		{"constraint error after ctx ended", cancelled, pg("23503"), false, false},
		{"pgx closed", nil, errors.New("conn closed"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			if got := commitRolledBack(ctx, tt.err); got != tt.commit {
				t.Errorf("commitRolledBack(%v) = %v, want %v", tt.err, got, tt.commit)
			}
			if got := statementRolledBack(ctx, tt.err); got != tt.complete {
				t.Errorf("statementRolledBack(%v) = %v, want %v", tt.err, got, tt.complete)
			}
		})
	}
}
