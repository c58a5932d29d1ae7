package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

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
			want := fmt.Sprintf("replay: records=%d run1_processed=%d run2_processed=%d run2_skipped=%d processed_twice=0 lost=0",
				total, tc.first, tc.then, tc.first)
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if got := lines[len(lines)-1]; got != want {
				t.Errorf("last line:\n got %s\nwant %s\n%s", got, want, out.String())
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
