package pgoutbox

// ClaimSQL returns the statement Claim runs, for plan tests.
func ClaimSQL(s *Store) string { return s.sql.claim }

// BacklogSQL returns the statement Backlog runs.
func BacklogSQL(s *Store) string { return s.sql.backlog }

// CleanupSQL returns the statement Cleanup runs (retention in µs, limit).
func CleanupSQL(s *Store) string { return s.sql.cleanup }

// OutcomeSQL returns the statements Finish runs for dispatched, retried
// and dead records, with their arguments for seqs.
func OutcomeSQL(s *Store, seqs []int64) map[string][]any {
	reasons, delays := make([]string, len(seqs)), make([]int64, len(seqs))
	return map[string][]any{
		"dispatched": {s.sql.dispatched, seqs},
		"retry":      {s.sql.retry, seqs, reasons, delays},
		"dead":       {s.sql.dead, seqs, reasons},
	}
}
