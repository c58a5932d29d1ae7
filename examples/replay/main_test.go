package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

var replayLine = regexp.MustCompile(`^replay: records=(\d+) run1_processed=(\d+) run2_processed=(\d+) run2_skipped=(\d+) processed_twice=(\d+) lost=(\d+)$`)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		store       string
		first, then int
	}{
		{"bolt", 8, 4},
		{"bolt", 3, 0},
		{"postgres", 8, 4},
		{"postgres", 5, 7},
	} {
		t.Run(fmt.Sprintf("%s/%d+%d", tc.store, tc.first, tc.then), func(t *testing.T) {
			cfg := config{Store: tc.store, First: tc.first, Then: tc.then, Timeout: 30 * time.Second}
			switch tc.store {
			case "bolt":
				cfg.BoltPath = filepath.Join(t.TempDir(), "dedupe.db")
			case "postgres":
				cfg.PostgresURL = testenv.PostgresURL(t)
				cfg.Table = testenv.Name(t, "replay")
				t.Cleanup(func() { dropTable(cfg.PostgresURL, cfg.Table) })
			}
			ctx := testenv.Context(t, 60*time.Second)
			var out bytes.Buffer
			if err := run(ctx, cfg, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			total := tc.first + tc.then
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			last := lines[len(lines)-1]
			m := replayLine.FindStringSubmatch(last)
			if m == nil {
				t.Fatalf("last line %q does not match %s\n%s", last, replayLine, out.String())
			}
			n := make([]int, len(m))
			for i := 1; i < len(m); i++ {
				n[i], _ = strconv.Atoi(m[i])
			}
			records, run1, run2, skipped, twice, lost := n[1], n[2], n[3], n[4], n[5], n[6]
			// records may exceed total if a client-side retry wrote a copy;
			// the counts of processed payments are exact.
			if records < total || run1 != tc.first || run2 != tc.then || skipped != records-tc.then || twice != 0 || lost != 0 {
				t.Errorf("got %s; want records>=%d run1_processed=%d run2_processed=%d run2_skipped=records-%d processed_twice=0 lost=0\n%s",
					last, total, tc.first, tc.then, tc.then, out.String())
			}
			if tc.store == "bolt" {
				// The file really holds every payment, kept forever.
				s, err := boltstore.Open(cfg.BoltPath)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if n, err := s.Len(); err != nil || n != total {
					t.Errorf("bolt store holds %d keys (err %v), want %d", n, err, total)
				}
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []config{
		{Store: "memory", First: 1},
		{Store: "postgres", Table: "Bad-Name", First: 1},
		{Store: "bolt", First: 0},
	} {
		if err := run(t.Context(), cfg, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%+v) = nil, want an error", cfg)
		}
	}
}

func dropTable(url, table string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if pool, err := pgxpool.New(ctx, url); err == nil {
		_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize())
		pool.Close()
	}
}

// TestRunHidesPasswords gives the program PostgreSQL URLs whose password a
// parser would quote or misread, and checks that neither the error nor the
// output shows any part of the password.
func TestRunHidesPasswords(t *testing.T) {
	const secret = "secret99"
	for _, url := range []string{
		"postgres://app:pw/" + secret + "@127.0.0.1:5432/test",   // '/' in the password: the parser stops the host there
		"postgres://app:2024/" + secret + "@127.0.0.1:5432/test", // ... and takes "2024" for a port and the rest for the path
		"postgres://app:pw%zz" + secret + "@127.0.0.1:5432/test", // a bad escape
		"postgres://app:" + secret + "@127.0.0.1:5432/test?sslmode=bogus",
		"postgres://app@127.0.0.1:5432/test?password=" + secret + "&sslmode=bogus",
	} {
		cfg := config{Store: "postgres", PostgresURL: url, Table: "uuidforge_replay_never_created", First: 1, Timeout: 10 * time.Second}
		var out bytes.Buffer
		err := run(t.Context(), cfg, &out)
		if err == nil {
			t.Errorf("run with %s: no error", redact(url))
			continue
		}
		if strings.Contains(err.Error()+out.String(), secret) {
			t.Errorf("the password shows:\nerror: %v\noutput: %s", err, out.String())
		}
	}
}
