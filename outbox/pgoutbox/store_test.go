package pgoutbox_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

func TestOptions(t *testing.T) {
	pool := newPool(t)
	bad := map[string]pgoutbox.Option{
		"table with space":  pgoutbox.WithTable("no spaces"),
		"table three parts": pgoutbox.WithTable("a.b.c"),
		"zero retention":    pgoutbox.WithRetention(0),
		"zero janitor":      pgoutbox.WithJanitor(0, nil),
	}
	for name, o := range bad {
		if _, err := pgoutbox.New(pool, o); err == nil || !strings.HasPrefix(err.Error(), "pgoutbox: With") {
			t.Errorf("%s: New = %v, want an error naming the option", name, err)
		}
	}
	if _, err := pgoutbox.New(nil); err == nil {
		t.Error("New(nil pool) accepted it")
	}
	s, err := pgoutbox.New(pool, pgoutbox.WithTable("myschema.events_outbox"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Table(), `"myschema"."events_outbox"`; got != want {
		t.Errorf("Table() = %s, want %s", got, want)
	}
	if got, want := s.Channel(), "myschema_events_outbox_notify"; got != want {
		t.Errorf("Channel() = %s, want %s", got, want)
	}

	badPub := map[string][]publisher.Option{
		"bad body size":   {publisher.WithMaxBodySize(0)},
		"other transport": {publisher.TransportOption("rabbitpub.WithExchange", func(*struct{ x int }) error { return nil })},
		"nil routing key": {pgoutbox.WithRoutingKey(nil)},
	}
	for name, opts := range badPub {
		if _, err := pgoutbox.NewPublisher(s, "d", gen, opts...); err == nil || !strings.HasPrefix(err.Error(), "pgoutbox: ") {
			t.Errorf("%s: NewPublisher = %v, want a pgoutbox error", name, err)
		}
	}
	for _, dest := range []string{"", strings.Repeat("d", outbox.MaxDestinationLen+1), "a\x00b", "\xff"} {
		if _, err := pgoutbox.NewPublisher(s, dest, gen); !errors.Is(err, outbox.ErrInvalidDestination) {
			t.Errorf("NewPublisher(destination %q) = %v, want ErrInvalidDestination", dest, err)
		}
	}
	if _, err := pgoutbox.NewPublisher(s, "d", nil); err == nil {
		t.Error("NewPublisher(nil generator) accepted it")
	}
}

func TestDDL(t *testing.T) {
	def, err := pgoutbox.DDL("")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`CREATE TABLE IF NOT EXISTS "uuidforge_outbox" (`,
		`CONSTRAINT "uuidforge_outbox_message_key" UNIQUE (destination, message_id)`,
		`CREATE INDEX IF NOT EXISTS "uuidforge_outbox_due_idx"`,
		`CREATE INDEX IF NOT EXISTS "uuidforge_outbox_key_idx"`,
		`CREATE INDEX IF NOT EXISTS "uuidforge_outbox_done_idx"`,
		`CREATE INDEX IF NOT EXISTS "uuidforge_outbox_dead_idx"`,
	} {
		if !strings.Contains(def, want) {
			t.Errorf("DDL(\"\") lacks %q:\n%s", want, def)
		}
	}
	if _, err := pgoutbox.DDL("no spaces"); err == nil {
		t.Error(`DDL("no spaces") accepted it`)
	}
	// Derived names of a long table stay within 63 bytes and distinct.
	a, b := strings.Repeat("a", 60)+"_1", strings.Repeat("a", 60)+"_2"
	da, _ := pgoutbox.DDL(a)
	db, _ := pgoutbox.DDL(b)
	idx := func(ddl string) string {
		i := strings.Index(ddl, "CREATE INDEX IF NOT EXISTS ")
		line := ddl[i+len("CREATE INDEX IF NOT EXISTS "):]
		return strings.Trim(line[:strings.IndexByte(line, '\n')], `"`)
	}
	if ia, ib := idx(da), idx(db); len(ia) > 63 || len(ib) > 63 || ia == ib {
		t.Errorf("index names %q and %q: want distinct names of at most 63 bytes", ia, ib)
	}
	sch, err := pgoutbox.DDL("app.outbox")
	if err != nil || !strings.Contains(sch, `ON "app"."outbox"`) || !strings.Contains(sch, `"outbox_due_idx"`) {
		t.Errorf("DDL(app.outbox) = %v:\n%s", err, sch)
	}
	// Tables in other schemas get other channels.
	s1, _ := pgoutbox.New(newPool(t), pgoutbox.WithTable("a.outbox"))
	s2, _ := pgoutbox.New(newPool(t), pgoutbox.WithTable("b.outbox"))
	if s1.Channel() == s2.Channel() {
		t.Errorf("a.outbox and b.outbox share channel %q", s1.Channel())
	}
}

// TestDDLDocumented: the DDL in the package documentation (doc.go, which
// other languages' writers read) is the DDL the package runs.
func TestDDLDocumented(t *testing.T) {
	def, _ := pgoutbox.DDL("")
	for _, file := range []string{"store.go", "doc.go"} {
		src := readFile(t, file)
		var doc []string
		in := false
		for _, line := range strings.Split(src, "\n") {
			code, isCode := strings.CutPrefix(line, "//\t")
			switch {
			case isCode && strings.HasPrefix(code, `CREATE TABLE IF NOT EXISTS "uuidforge_outbox"`):
				in = true
			case !isCode:
				in = false
			}
			if in {
				doc = append(doc, strings.ReplaceAll(code, "\t", " "))
			}
		}
		got := strings.Join(doc, "\n")
		want := strings.ReplaceAll(strings.TrimSpace(def), "\t", " ")
		if normalize(got) != normalize(want) {
			t.Errorf("%s documents\n%s\nbut DDL(\"\") is\n%s", file, got, want)
		}
	}
}

func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestMigrateConcurrent(t *testing.T) {
	pool := newPool(t)
	table := testenv.Name(t, "ob")
	t.Cleanup(func() { testenv.DropTables(t, pgx.Identifier{table}.Sanitize()) })
	ctx := testenv.Context(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			s, err := pgoutbox.New(pool, pgoutbox.WithTable(table))
			if err == nil {
				err = s.Migrate(ctx)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	s, _ := pgoutbox.New(pool, pgoutbox.WithTable(table))
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate on a migrated table: %v", err)
	}
	enqueue(t, pool, newPublisher(t, s, "d"), msg("a", "1"))
}

// TestEnqueueRow: the row holds the message exactly as a broker publisher
// would send it: the IDs publisher.IDs computes (with the lineage of the
// context), the key's wire form, headers, routing key, body.
func TestEnqueueRow(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 30*time.Second)
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), Type: "cart.checked-out"}
	explicitCorr := uuid.New()
	cases := []struct {
		name string
		ctx  context.Context
		msg  publisher.Message
		opts []publisher.Option
		rk   string
		key  []byte
	}{
		{name: "string key", ctx: ctx, msg: publisher.Message{Type: "order.placed", Key: []any{"SO-1"}, Body: []byte(`{"n":1}`),
			Headers: map[string]string{"tenant": "acme", "empty": ""}}, key: []byte("SO-1")},
		{name: "composite key", ctx: ctx, msg: publisher.Message{Type: "invoice.issued", Key: []any{"EUR", 12345}, Body: []byte("x")},
			key: []byte(`["EUR",12345]`)},
		{name: "no key", ctx: ctx, msg: publisher.Message{Type: "note.added", Body: []byte("hello")}},
		{name: "lineage", ctx: lineage.NewContext(ctx, parent), msg: publisher.Message{Type: "order.placed", Key: []any{"SO-2"}, Body: []byte("y")},
			key: []byte("SO-2")},
		{name: "explicit correlation", ctx: ctx, msg: publisher.Message{Type: "order.placed", Key: []any{"SO-3"}, CorrelationID: explicitCorr},
			key: []byte("SO-3")},
		{name: "routing key", ctx: ctx, msg: publisher.Message{Type: "order.placed", Key: []any{"SO-4"}, RoutingKey: "eu.orders"},
			rk: "eu.orders", key: []byte("SO-4")},
		{name: "routing key option", ctx: ctx, msg: publisher.Message{Type: "order.placed", Key: []any{"SO-5"}},
			opts: []publisher.Option{pgoutbox.WithRoutingKey(func(m *publisher.Message) string { return "by-key." + m.Key[0].(string) })},
			rk:   "by-key.SO-5", key: []byte("SO-5")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dest := testenv.Name(t, "d")
			p := newPublisher(t, s, dest, tc.opts...)
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				return p.Publish(pgoutbox.NewContext(tc.ctx, tx), tc.msg)
			})
			if err != nil {
				t.Fatal(err)
			}
			m := tc.msg
			want, err := publisher.IDs(tc.ctx, gen, &m)
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Lookup(ctx, dest, want.MessageID)
			if err != nil {
				t.Fatal(err)
			}
			if r.ID != want.MessageID || r.CorrelationID != want.CorrelationID || r.CausationID != want.CausationID {
				t.Errorf("IDs %s/%s/%s, want %s/%s/%s", r.ID, r.CorrelationID, r.CausationID, want.MessageID, want.CorrelationID, want.CausationID)
			}
			if r.Type != m.Type || string(r.Body) != string(m.Body) || r.RoutingKey != tc.rk || r.Destination != dest {
				t.Errorf("row %+v", r)
			}
			if (r.Key == nil) != (tc.key == nil) || string(r.Key) != string(tc.key) {
				t.Errorf("key %q (nil %v), want %q", r.Key, r.Key == nil, tc.key)
			}
			if len(r.Headers) != len(m.Headers) {
				t.Errorf("headers %v, want %v", r.Headers, m.Headers)
			}
			for k, v := range m.Headers {
				if r.Headers[k] != v {
					t.Errorf("header %q = %q, want %q", k, r.Headers[k], v)
				}
			}
			if r.State != outbox.Pending || r.Attempts != 0 || r.CreatedAt.IsZero() || r.DueAt.IsZero() || !r.DoneAt.IsZero() {
				t.Errorf("state %+v", r)
			}
			// Sending the record again reproduces its IDs.
			again := r.Message()
			l, err := publisher.IDs(ctx, gen, &again)
			if err != nil || l.MessageID != r.ID || l.CorrelationID != r.CorrelationID || l.CausationID != r.CausationID {
				t.Errorf("Record.Message() stamps %+v, %v; want the record's IDs", l, err)
			}
			if k, _ := publisher.KeyBytes(again.Key); string(k) != string(r.Key) || (k == nil) != (r.Key == nil) {
				t.Errorf("Record.Message() key %q, want %q", k, r.Key)
			}
		})
	}
}

// TestTransactions: a publisher writes into the transaction of its context
// — given with NewContext or the inbox's — and nowhere without one.
func TestTransactions(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	ctx := testenv.Context(t, 30*time.Second)
	p := newPublisher(t, s, "d")

	t.Run("rolled back", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(pgoutbox.NewContext(ctx, tx), msg("rolled.back", "1")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if n := count(t, pool, s, ""); n != 0 {
			t.Fatalf("%d rows after a rollback, want 0", n)
		}
	})
	t.Run("no transaction", func(t *testing.T) {
		err := p.Publish(ctx, msg("no.tx", "1"))
		if !errors.Is(err, pgoutbox.ErrNoTransaction) {
			t.Fatalf("Publish without a transaction = %v, want ErrNoTransaction", err)
		}
		if n := count(t, pool, s, ""); n != 0 {
			t.Fatalf("%d rows, want 0", n)
		}
	})
	t.Run("own transaction", func(t *testing.T) {
		own := newPublisher(t, s, "d", pgoutbox.WithOwnTransaction())
		if err := own.Publish(ctx, msg("own.tx", "1")); err != nil {
			t.Fatal(err)
		}
		if n := count(t, pool, s, ""); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
		// With a transaction in the context it still uses that one.
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := own.Publish(pgoutbox.NewContext(ctx, tx), msg("own.tx", "2")); err != nil {
			t.Fatal(err)
		}
		_ = tx.Rollback(ctx)
		if n := count(t, pool, s, ""); n != 1 {
			t.Fatalf("%d rows, want 1", n)
		}
	})
}

// TestEnqueueTwice: the same message enqueued twice (a retried request) is
// stored once, also within one batch, also concurrently.
func TestEnqueueTwice(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	p := newPublisher(t, s, "d")
	other := newPublisher(t, s, "other")
	m := msg("order.placed", "SO-1")
	enqueue(t, pool, p, m)
	enqueue(t, pool, p, m, m)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { enqueue(t, pool, p, m) })
	}
	wg.Wait()
	if n := count(t, pool, s, ""); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
	enqueue(t, pool, other, m) // another destination is another message
	if n := count(t, pool, s, ""); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

// TestEnqueueInvalid: an invalid message stores nothing of its batch, and
// the error names its index in a batch (as the brokers' publishers do).
func TestEnqueueInvalid(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	p := newPublisher(t, s, "d", publisher.WithMaxBodySize(10))
	ctx := testenv.Context(t, 30*time.Second)
	for name, bad := range map[string]publisher.Message{
		"no type":           {Key: []any{"1"}},
		"NUL in type":       {Type: "a\x00b", Key: []any{"1"}},
		"NUL in header":     {Type: "a", Key: []any{"1"}, Headers: map[string]string{"h": "x\x00"}},
		"NUL in routing":    {Type: "a", Key: []any{"1"}, RoutingKey: "r\x00"},
		"long routing key":  {Type: "a", Key: []any{"1"}, RoutingKey: strings.Repeat("r", 256)},
		"body too large":    {Type: "a", Key: []any{"1"}, Body: make([]byte, 11)},
		"reserved header":   {Type: "a", Key: []any{"1"}, Headers: map[string]string{lineage.HeaderMessageID: "x"}},
		"nothing to derive": {Type: "a"},
	} {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return p.PublishBatch(pgoutbox.NewContext(ctx, tx), msg("ok", "1"), bad)
		})
		if !errors.Is(err, publisher.ErrInvalid) || !strings.HasPrefix(err.Error(), "pgoutbox: batch message 1: ") {
			t.Errorf("%s: PublishBatch = %v, want ErrInvalid for batch message 1", name, err)
		}
		err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return p.Publish(pgoutbox.NewContext(ctx, tx), bad)
		})
		if !errors.Is(err, publisher.ErrInvalid) || !strings.HasPrefix(err.Error(), "pgoutbox: ") || strings.Contains(err.Error(), "message 0") {
			t.Errorf("%s: Publish = %v, want ErrInvalid without a batch index", name, err)
		}
	}
	if n := count(t, pool, s, ""); n != 0 {
		t.Fatalf("%d rows, want 0", n)
	}
}

// TestClaimHeads: a claim takes the first pending record of each key with
// the records that follow it, and nothing of a key whose earlier records
// are held, waiting or pending.
func TestClaimHeads(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	p := newPublisher(t, s, "d")
	enqueue(t, pool, p, msg("a1", "A"), msg("b1", "B"), msg("a2", "A"), msg("n1", ""), msg("a3", "A"))
	enqueue(t, pool, newPublisher(t, s, "other"), msg("o1", "A"))

	b1 := claim(t, s, "d", 10)
	if got, want := strings.Join(types(b1.Records()), " "), "a1 b1 a2 n1 a3"; got != want {
		t.Fatalf("first claim %s, want %s", got, want)
	}
	// Held: nothing to claim, not even a record enqueued meanwhile behind a held one.
	enqueue(t, pool, p, msg("a4", "A"), msg("c1", "C"))
	b2 := claim(t, s, "d", 10)
	if got := strings.Join(types(b2.Records()), " "); got != "c1" {
		t.Fatalf("claim while held: %s, want c1", got)
	}
	finish(t, b2, outbox.Outcome{})
	recs := b1.Records()
	finish(t, b1, outbox.Outcome{
		Dispatched: []int64{recs[0].Seq},                                                             // a1
		Retry:      []outbox.Failure{{Seq: recs[2].Seq, Reason: "broker said no", Delay: time.Hour}}, // a2
		Dead:       []outbox.Failure{{Seq: recs[3].Seq, Reason: "unroutable"}},                       // n1
	}) // b1, a3 released unchanged
	// a2 waits an hour; a3 and a4 wait for it. b1 and c1 are free.
	b3 := claim(t, s, "d", 10)
	if got := strings.Join(types(b3.Records()), " "); got != "b1 c1" {
		t.Fatalf("claim after finish: %s, want b1 c1", got)
	}
	finish(t, b3, outbox.Outcome{})
	a2, err := s.Lookup(testenv.Context(t, 10*time.Second), "d", recs[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	if a2.Attempts != 1 || a2.LastError != "broker said no" || time.Until(a2.DueAt) < 50*time.Minute {
		t.Fatalf("retried record %+v", a2)
	}
	// The records behind a2 were made to wait as long (so claims do not
	// step over them), and a3 kept no attempt of its own.
	a3, _ := s.Lookup(testenv.Context(t, 10*time.Second), "d", recs[4].ID)
	if !a3.DueAt.Equal(a2.DueAt) || a3.Attempts != 0 {
		t.Fatalf("follower %+v, want due with a2 (%v) and no attempt", a3, a2.DueAt)
	}

	// Limits: heads first, then followers while there is room.
	s2 := newStore(t, pool)
	p2 := newPublisher(t, s2, "d")
	enqueue(t, pool, p2, msg("a1", "A"), msg("a2", "A"), msg("a3", "A"), msg("b1", "B"), msg("b2", "B"), msg("c1", "C"))
	for limit, want := range map[int]string{
		1: "a1",
		3: "a1 b1 c1",
		4: "a1 a2 b1 c1",
		5: "a1 a2 b1 b2 c1",
		6: "a1 a2 a3 b1 b2 c1",
	} {
		b := claim(t, s2, "d", limit)
		if got := strings.Join(types(b.Records()), " "); got != want {
			t.Errorf("limit %d: %s, want %s", limit, got, want)
		}
		finish(t, b, outbox.Outcome{})
	}
}

// TestClaimConcurrent: claimers racing on one table never hold records of
// one key at once, never take a record while an earlier one of its key is
// pending outside their batch, and dispatch every record once.
func TestClaimConcurrent(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	p := newPublisher(t, s, "d")
	const keys, perKey = 20, 15
	var msgs []publisher.Message
	for i := range perKey {
		for k := range keys {
			msgs = append(msgs, msg("m"+string(rune('a'+i)), "k"+string(rune('A'+k))))
		}
	}
	enqueue(t, pool, p, msgs...)
	ctx := testenv.Context(t, 60*time.Second)
	var (
		mu         sync.Mutex
		dispatched = map[int64]int{}
		wg         sync.WaitGroup
	)
	for range 6 {
		wg.Go(func() {
			for {
				b, err := s.Claim(ctx, "d", 7)
				if err != nil {
					t.Error(err)
					return
				}
				recs := b.Records()
				if len(recs) == 0 {
					_ = b.Finish(ctx, outbox.Outcome{})
					if count(t, pool, s, outbox.Pending) == 0 {
						return
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				// No pending record of a claimed key precedes it outside the batch.
				var bad int
				err = pool.QueryRow(ctx, `SELECT count(*) FROM `+s.Table()+` AS o
					WHERE o.seq = ANY($1) AND EXISTS (
						SELECT 1 FROM `+s.Table()+` AS e
						WHERE e.destination = o.destination AND e.msg_key = o.msg_key AND e.state = 'pending'
							AND e.seq < o.seq AND NOT e.seq = ANY($1))`, seqs(recs)).Scan(&bad)
				if err != nil || bad != 0 {
					t.Errorf("batch %v: %d records with a pending predecessor outside it (%v)", seqs(recs), bad, err)
				}
				time.Sleep(time.Millisecond)
				if err := b.Finish(ctx, outbox.Outcome{Dispatched: seqs(recs)}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, r := range recs {
					dispatched[r.Seq]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(dispatched) != keys*perKey {
		t.Fatalf("%d records dispatched, want %d", len(dispatched), keys*perKey)
	}
	for seq, n := range dispatched {
		if n != 1 {
			t.Errorf("record %d dispatched %d times", seq, n)
		}
	}
}

// TestFinishFailed: a batch whose Finish fails stores nothing and releases
// its records.
func TestFinishFailed(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	enqueue(t, pool, newPublisher(t, s, "d"), msg("a1", "A"), msg("b1", "B"))
	b := claim(t, s, "d", 10)
	recs := b.Records()
	// A retry with an invalid reason would do; simplest: a cancelled context.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Finish(cctx, outbox.Outcome{Dispatched: seqs(recs)}); err == nil {
		t.Fatal("Finish with a cancelled context succeeded")
	}
	if n := count(t, pool, s, outbox.Pending); n != 2 {
		t.Fatalf("%d pending, want 2", n)
	}
	b = claim(t, s, "d", 10)
	if got := len(b.Records()); got != 2 {
		t.Fatalf("claim after a failed finish: %d records, want 2", got)
	}
	finish(t, b, outbox.Outcome{})
}

// traceObserver is a publisher.Observer that adds a trace header at enqueue
// and records the results.
type traceObserver struct {
	mu      sync.Mutex
	started []*publisher.Publication
	done    []error
}

func (o *traceObserver) PublishStart(ctx context.Context, p *publisher.Publication) context.Context {
	p.SetHeader("traceparent", "00-"+p.Lineage.MessageID.String())
	p.SetHeader(lineage.HeaderMessageID, "ignored: reserved")
	o.mu.Lock()
	o.started = append(o.started, p)
	o.mu.Unlock()
	return ctx
}

func (o *traceObserver) PublishRetry(context.Context, *publisher.Publication, error) {}

func (o *traceObserver) PublishDone(_ context.Context, _ *publisher.Publication, err error) {
	o.mu.Lock()
	o.done = append(o.done, err)
	o.mu.Unlock()
}

// TestEnqueueObserver: an observer given to the publisher sees each
// enqueue, and the headers it sets (a trace context) are stored with the
// message, to travel with it when the relay publishes it.
func TestEnqueueObserver(t *testing.T) {
	pool := newPool(t)
	s := newStore(t, pool)
	obs := &traceObserver{}
	p := newPublisher(t, s, "d", publisher.WithObserver(obs))
	m := publisher.Message{Type: "order.placed", Key: []any{"SO-1"}, Headers: map[string]string{"tenant": "acme"}}
	enqueue(t, pool, p, m, msg("b", "2"))
	if len(obs.started) != 2 || len(obs.done) != 2 || obs.done[0] != nil || obs.done[1] != nil {
		t.Fatalf("observer saw %d starts, results %v", len(obs.started), obs.done)
	}
	if st := obs.started[0]; st.System != "outbox" || st.Destination != "d" || string(st.Key) != "SO-1" || st.Batch != 2 {
		t.Errorf("publication %+v", st)
	}
	id := idOf(t, m)
	r, err := s.Lookup(testenv.Context(t, 10*time.Second), "d", id)
	if err != nil {
		t.Fatal(err)
	}
	if r.Headers["traceparent"] != "00-"+id.String() || r.Headers["tenant"] != "acme" || len(r.Headers) != 2 {
		t.Errorf("stored headers %v", r.Headers)
	}
	if m.Headers["traceparent"] != "" {
		t.Error("the caller's headers map was modified")
	}
	// A failed enqueue is reported as failed.
	err = p.Publish(testenv.Context(t, 10*time.Second), msg("c", "3"))
	if !errors.Is(err, pgoutbox.ErrNoTransaction) || !errors.Is(obs.done[2], pgoutbox.ErrNoTransaction) {
		t.Errorf("Publish = %v, observer got %v", err, obs.done[2])
	}
}
