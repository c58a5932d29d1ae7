package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
)

// The transactional inbox: the handler's insert and the completion commit
// together, so a redelivered message never inserts twice. (Compile-only: it
// needs a PostgreSQL server.)
func ExampleStore_Process() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool, pgstore.WithJanitor(time.Minute, nil))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	msgID := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	c, err := store.Process(ctx, dedupe.Key{Scope: "billing", ID: msgID}, 30*time.Second, dedupe.Forever,
		func(ctx context.Context) error {
			tx, _ := pgstore.TxFromContext(ctx)
			_, err := tx.Exec(ctx, "INSERT INTO invoices (message_id, cents) VALUES ($1, $2)", msgID, 1999)
			return err
		})
	if err != nil {
		log.Print(err) // rolled back and released: do not ack
		return
	}
	log.Print(c.Status) // acquired (inserted now) or duplicate (inserted before): ack; in flight: retry after c.Until
}

// A caller that manages its own transaction completes the claim inside it.
func ExampleStore_CompleteTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool)
	if err != nil {
		log.Fatal(err)
	}

	c, err := store.Claim(ctx, dedupe.Key{Scope: "billing", ID: uuid.New()}, 30*time.Second)
	if err != nil || !c.Acquired() {
		return
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		_ = store.Release(ctx, c)
		return
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - 1999 WHERE id = 42"); err != nil {
		_ = store.Release(ctx, c)
		return
	}
	if err := store.CompleteTx(ctx, tx, c, 0); errors.Is(err, dedupe.ErrLeaseLost) {
		return // someone else holds the key now: roll back, do not ack
	}
	if err := tx.Commit(ctx); err != nil {
		_ = store.Release(ctx, c)
	}
}

// The default table's DDL, for a migration tool.
func ExampleDDL() {
	ddl, err := pgstore.DDL("")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(strings.ReplaceAll(ddl, "\t", "  "))
	// Output:
	// CREATE SEQUENCE IF NOT EXISTS "uuidforge_dedupe_token_seq";
	// CREATE TABLE IF NOT EXISTS "uuidforge_dedupe" (
	//   scope      text        NOT NULL,
	//   id         uuid        NOT NULL,
	//   state      text        NOT NULL CHECK (state IN ('leased', 'done', 'released')),
	//   token      bigint      NOT NULL,
	//   expires_at timestamptz,
	//   PRIMARY KEY (scope, id)
	// );
	// ALTER SEQUENCE "uuidforge_dedupe_token_seq" OWNED BY "uuidforge_dedupe".token;
	// CREATE INDEX IF NOT EXISTS "uuidforge_dedupe_expires_idx"
	//   ON "uuidforge_dedupe" (expires_at) WHERE expires_at IS NOT NULL;
}
