package pgoutbox

// ClaimSQL returns the statement Claim runs, for plan tests.
func ClaimSQL(s *Store) string { return s.sql.claim }

// BacklogSQL returns the statement Backlog runs.
func BacklogSQL(s *Store) string { return s.sql.backlog }

// CleanupSQL returns the statement Cleanup runs (retention in µs, limit).
func CleanupSQL(s *Store) string { return s.sql.cleanup }
