package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// testConfig gives the test its own namespace (so its IDs, and therefore its
// Redis keys, are its own), schema, queue and directory, and removes them
// afterwards.
func testConfig(t *testing.T) config {
	t.Helper()
	cfg := config{
		AMQPURL:     testenv.AMQPURL(t),
		RedisURL:    testenv.RedisURL(t),
		PostgresURL: testenv.PostgresURL(t),
		Namespace:   testenv.Name(t, "shop") + ".example.com",
		Schema:      testenv.Name(t, "orders"),
		Queue:       testenv.Name(t, "orders"),
		Dir:         t.TempDir(),
		CacheTTL:    time.Minute,
		Timeout:     30 * time.Second,
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s, err := openShop(ctx, cfg); err == nil {
			_, _ = s.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{cfg.Schema}.Sanitize()+" CASCADE")
			for _, o := range sampleOrders() {
				if d, err := s.ids.doc(o); err == nil {
					s.rdb.Del(ctx, cacheKey(d.ID))
				}
			}
			s.Close()
		}
		if conn, err := amqp.Dial(cfg.AMQPURL); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(cfg.Queue, false, false, false)
				_, _ = ch.QueueDelete(cfg.Queue+consumer.DeadLetterSuffix, false, false, false)
			}
			conn.Close()
		}
	})
	return cfg
}

func TestRun(t *testing.T) {
	cfg := testConfig(t)
	ctx := testenv.Context(t, 60*time.Second)
	var out bytes.Buffer
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	orders := sampleOrders()
	for _, want := range []string{
		"consumer: 4 deliveries, 3 orders stored, duplicates skipped: 1",
		"consistency: orders=3 consistent=3 mismatches=0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}

	// Look into the stores without the program's help.
	s, err := openShop(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var nOrders, nItems, nUsers, nProducts int
	if err := s.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT user_id) FROM "+s.table("orders")).Scan(&nOrders, &nUsers); err != nil {
		t.Fatal(err)
	}
	if err := s.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT product_id) FROM "+s.table("order_items")).Scan(&nItems, &nProducts); err != nil {
		t.Fatal(err)
	}
	// Three orders of two customers ("Ada@Example.com " is ada@example.com),
	// four item rows of three products (USB-C-2M is in two orders).
	if nOrders != 3 || nUsers != 2 || nItems != 4 || nProducts != 3 {
		t.Errorf("postgres: %d orders of %d users, %d items of %d products; want 3, 2, 4, 3", nOrders, nUsers, nItems, nProducts)
	}
	for _, o := range orders {
		d, err := s.ids.doc(o)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.rdb.Exists(ctx, "order:"+d.ID.String()).Result(); err != nil || n != 1 {
			t.Errorf("redis order:%s: exists=%d err=%v", d.ID, n, err)
		}
		h := d.ID.String()
		if _, err := os.Stat(cfg.Dir + "/" + h[:2] + "/" + h[2:4] + "/" + h + ".json"); err != nil {
			t.Errorf("file for %s: %v", d.ID, err)
		}
	}
}

// TestCheckFindsMismatches breaks each store in a different way and expects
// the validator to name each break.
func TestCheckFindsMismatches(t *testing.T) {
	cfg := testConfig(t)
	ctx := testenv.Context(t, 60*time.Second)
	if err := run(ctx, cfg, &bytes.Buffer{}); err != nil {
		t.Fatalf("run: %v", err)
	}
	s, err := openShop(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	orders := sampleOrders()
	first, _ := s.ids.doc(orders[0])
	second, _ := s.ids.doc(orders[1])
	third, _ := s.ids.doc(orders[2])

	// The cache lost one order, a file of another was overwritten with
	// someone else's, and PostgreSQL holds the third under the wrong user.
	if err := s.rdb.Del(ctx, cacheKey(first.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(s.filePath(third.ID))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.filePath(second.ID), other, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "UPDATE "+s.table("orders")+" SET user_id = $1 WHERE id = $2", second.UserID, third.ID); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	rep, err := s.check(ctx, orders, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.orders != 3 || rep.consistent != 0 {
		t.Errorf("orders=%d consistent=%d, want 3 and 0\n%s", rep.orders, rep.consistent, out.String())
	}
	for _, want := range []string{
		"MISMATCH redis order:" + first.ID.String() + " order: expected " + first.ID.String() + ", actual missing",
		"MISMATCH file " + s.filePath(second.ID) + " order id: expected " + second.ID.String() + ", actual " + third.ID.String(),
		"MISMATCH postgres user_id: expected " + third.UserID.String() + ", actual " + second.UserID.String(),
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
}
