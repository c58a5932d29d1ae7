package consumer_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/internal/testsink"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// The Redis connection is cut after the claim and before the completion
// (the handler takes Redis down and brings it back a little later): the
// message is not lost, and its handler runs once — the completion is
// retried with the same claim once Redis answers again.
func TestRedisCutBetweenClaimAndComplete(t *testing.T) {
	store, proxy := testsink.RedisBehindProxy(t)
	var effects atomic.Int32
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		if effects.Add(1) == 1 {
			proxy.SetDown(true)
			time.AfterFunc(2*time.Second, func() { proxy.SetDown(false) }) // longer than go-redis retries by itself
		}
		return nil
	}), consumer.WithDedupe(store, testenv.Name(t, "scope")), consumer.WithLease(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p := &consumer.Processor{Handler: h, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	m := msg()
	ctx := testenv.Context(t, 30*time.Second)
	out, err := p.Process(ctx, ctx, m)
	if out != consumer.OutcomeAck || effects.Load() != 1 {
		t.Fatalf("outcome %v (%v) after %d effects; want ack after exactly one", out, err, effects.Load())
	}
	if proxy.Refused() == 0 {
		t.Fatal("the store never met the cut: the test proves nothing")
	}
	again := *m
	if out, err := p.Process(ctx, ctx, &again); out != consumer.OutcomeAck || effects.Load() != 1 {
		t.Fatalf("redelivery: %v (%v), %d effects; want a duplicate", out, err, effects.Load())
	}
}

// Every PostgreSQL session of the inbox is terminated while messages are
// processed (what a server restart does to its clients: SQLSTATE 57P01):
// no message is lost and none takes effect twice.
func TestPostgresSessionsKilledDuringInbox(t *testing.T) {
	// The inbox's own pool, named, so that only its sessions are killed
	// (other tests use the same database at the same time).
	appName := testenv.Name(t, "inbox")
	cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	ctx := testenv.Context(t, 2*time.Minute)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := newInbox(t, testsink.Pool(t))
	store, err = pgstore.New(pool, pgstore.WithTable(store.Table()[1:len(store.Table())-1]))
	if err != nil {
		t.Fatal(err)
	}
	table := testenv.Name(t, "effects")
	if _, err := testsink.Pool(t).Exec(ctx, "CREATE TABLE "+pgx.Identifier{table}.Sanitize()+" (id text)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropTables(t, table) })
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		tx, _ := pgstore.TxFromContext(ctx)
		_, err := tx.Exec(ctx, "INSERT INTO "+pgx.Identifier{table}.Sanitize()+" (id) VALUES ($1)", string(m.Body))
		return err
	}), consumer.WithDedupe(store, "billing"), consumer.WithLease(2*time.Second), consumer.WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// The lease is short: a claim whose release was killed too is taken
	// again after it instead of after the default 30 s.
	p := &consumer.Processor{Handler: h, MaxAttempts: 1000, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

	// A killer terminates every session of the inbox's pool, again and
	// again, while the messages are processed.
	killer, err := pgx.Connect(ctx, testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	stopKilling := make(chan struct{})
	killed := make(chan int64, 1)
	go func() {
		var total int64
		defer func() { killed <- total }()
		for {
			// A new session takes 15-50 ms to set up on a small machine:
			// killing at a fixed shorter interval would kill every one
			// before it did any work. A random pause of 10-90 ms kills
			// sessions at every stage of their work.
			select {
			case <-stopKilling:
				return
			case <-time.After(time.Duration(10+rand.IntN(80)) * time.Millisecond):
			}
			var n int64
			// Only sessions that have lived 50 ms: on a loaded machine a
			// session can take longer than the pause to set up, and
			// killing it then would stop the pool from ever working.
			_ = killer.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE application_name = $1 AND backend_start < clock_timestamp() - interval '50 milliseconds') t`, appName).Scan(&n)
			total += n
		}
	}()
	var total int64
	stop := sync.OnceFunc(func() {
		close(stopKilling)
		total = <-killed
		killer.Close(context.Background())
	})
	defer stop()
	const n = 200
	ms := make([]*consumer.Message, n)
	for i := range ms {
		ms[i] = msg()
		ms[i].Body = []byte(strconv.Itoa(i))
		if out, err := p.Process(ctx, ctx, ms[i]); out != consumer.OutcomeAck {
			t.Fatalf("message %d: %v, %v", i, out, err)
		}
		if i%4 == 0 { // and a redelivery now and then
			again := *ms[i]
			if out, err := p.Process(ctx, ctx, &again); out != consumer.OutcomeAck {
				t.Fatalf("redelivery of %d: %v, %v", i, out, err)
			}
		}
	}
	stop()
	if total == 0 {
		t.Fatal("no session was terminated: the test proves nothing")
	}
	var rows, distinct int
	if err := testsink.Pool(t).QueryRow(ctx, "SELECT count(*), count(DISTINCT id) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != n || distinct != n {
		t.Fatalf("%d effect rows for %d distinct messages, want %d and %d (%d sessions terminated)", rows, distinct, n, n, total)
	}
	t.Logf("%d sessions terminated during %d messages", total, n)
}

// hangingRelease is a store whose Release never answers until its context
// ends (a store on a dead connection).
type hangingRelease struct{ dedupe.Store }

func (s hangingRelease) Release(ctx context.Context, c dedupe.Claim) error {
	<-ctx.Done()
	return ctx.Err()
}

// A store call after the handler (here the release after a failure) is
// bounded: a hung store does not hold the worker for ever.
func TestStoreCallAfterHandlerIsBounded(t *testing.T) {
	defer consumer.SetStoreCallTimeout(100 * time.Millisecond)()
	h, err := consumer.NewHandler(consumer.HandlerFunc(func(context.Context, *consumer.Message) error {
		return errors.New("fails")
	}), consumer.WithDedupe(hangingRelease{newMemory(t)}, "billing"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Handle(context.Background(), msg()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "release failed") {
			t.Fatalf("Handle = %v, want the handler's error and the failed release", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the release after a failed handler hung on the store")
	}
}
