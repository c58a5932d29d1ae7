package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
)

// outboxRun is the outbox scenario, the full path of a service: a writer
// inserts orders and enqueues order.placed in the same transactions
// (pgoutbox) → relay processes → RabbitMQ → the billing process, which
// writes a charge and enqueues payment.captured in its inbox transaction →
// relays → Kafka → the receipts process, which writes a receipt.
type outboxRun struct {
	e                   *env
	n                   int
	queue, topic, group string
	tables              tables
	channel             string // the outbox's notification channel

	relays            []*proc
	billing, receipts *proc

	orders      []order
	claimed     atomic.Int64 // orders handed to writers
	written     atomic.Int64 // orders committed
	writeErrors atomic.Int64 // order transactions that failed and were written again
	applied     atomic.Int64 // last count of receipts (and drops), throttles the writer
	republished atomic.Int64 // dispatched records made pending again

	writeFaults, consFaults []*fault
	replayed, replayNew     int64 // set by replay
}

// order is one order the writer places, with the IDs its messages must get.
type order struct {
	no        int64
	amount    int64
	placedID  uuid.UUID // order.placed
	paymentID uuid.UUID // payment.captured, caused by order.placed
}

// outboxResult is what the outbox scenario counted.
type outboxResult struct {
	orders, events, effects, duplicates, lost      int64
	charges, chargedOrders, mismatched, unexpected int64
	pending, dead, notWritten                      int64
	replayNew, replayed, leftInQueue, writeErrors  int64
	republished, handlerFailures, panics, dropped  int64
	kinds                                          map[faultKind]int64
	missedFaults, workerProblems                   []string
	counted                                        bool
}

func (r outboxResult) faults() int64 {
	return r.republished + r.handlerFailures + r.kinds[connKill] + r.kinds[consumerKill] + r.kinds[relayKill] +
		r.kinds[kafkaRestart] + r.kinds[pgRestart]
}

func (r outboxResult) problems() []string {
	if !r.counted {
		return []string{"outbox: the effects could not be counted"}
	}
	var p []string
	add := func(format string, args ...any) { p = append(p, "outbox: "+fmt.Sprintf(format, args...)) }
	if r.notWritten != 0 {
		add("%d orders not written", r.notWritten)
	}
	if r.events != r.orders {
		add("%d payment.captured events for %d orders", r.events, r.orders)
	}
	if r.effects != r.orders {
		add("%d receipts for %d orders", r.effects, r.orders)
	}
	if r.duplicates != 0 {
		add("%d orders charged or receipted more than once", r.duplicates)
	}
	if r.lost != 0 {
		add("%d orders without a receipt", r.lost)
	}
	if r.mismatched != 0 {
		add("%d charges or receipts that do not match their order (amount or message IDs)", r.mismatched)
	}
	if r.unexpected != 0 {
		add("%d charges or receipts for orders that do not exist", r.unexpected)
	}
	if r.pending != 0 || r.dead != 0 {
		add("%d outbox records pending and %d dead at the end", r.pending, r.dead)
	}
	if r.replayNew != 0 {
		add("the replay added %d receipts", r.replayNew)
	}
	if r.leftInQueue != 0 {
		add("%d messages left in the queue", r.leftInQueue)
	}
	for _, f := range r.missedFaults {
		add("fault not injected: %s", f)
	}
	return append(p, r.workerProblems...)
}

func (r outboxResult) print(e *env) {
	e.printf("outbox-checks: charges=%d charged_orders=%d receipts=%d mismatched=%d unexpected=%d pending=%d dead=%d replay_new_receipts=%d replayed_records=%d left_in_queue=%d write_retries=%d\n",
		r.charges, r.chargedOrders, r.effects, r.mismatched, r.unexpected, r.pending, r.dead, r.replayNew, r.replayed, r.leftInQueue, r.writeErrors)
	e.printf("outbox-faults: republished=%d handler_failures=%d (panics %d) rabbitmq_connection_kills=%d consumer_sigkills=%d relay_sigkills=%d kafka_restarts=%d postgres_restarts=%d dropped=%d\n",
		r.republished, r.handlerFailures, r.panics, r.kinds[connKill], r.kinds[consumerKill], r.kinds[relayKill], r.kinds[kafkaRestart], r.kinds[pgRestart], r.dropped)
	e.printf("chaos-outbox: orders=%d events=%d effects=%d duplicates=%d lost=%d faults=%d\n",
		r.orders, r.events, r.effects, r.duplicates, r.lost, r.faults())
}

// runOutbox sets the outbox scenario up, runs it, prints its lines and
// returns its problems; an error when it could not set up.
func runOutbox(ctx context.Context, e *env) ([]string, error) {
	o := &outboxRun{
		e: e, n: e.opt.orders,
		queue: "chaos." + e.run + ".orders", topic: "chaos." + e.run + ".payments", group: "chaos-" + e.run + "-receipts",
		tables: tables{prefix: "chaos_" + e.run + "_ob"},
	}
	if err := o.setup(ctx); err != nil {
		return nil, err
	}
	res, err := o.chaos(ctx)
	problems := res.problems()
	if err != nil {
		e.warnf("outbox: %v", err)
		problems = append(problems, "outbox: "+err.Error())
	}
	res.print(e)
	return problems, nil
}

func (o *outboxRun) setup(ctx context.Context) error {
	e, t := o.e, o.tables
	ddl := fmt.Sprintf(`CREATE TABLE %[1]s (
		order_no   bigint      PRIMARY KEY,
		amount     bigint      NOT NULL,
		placed_at  timestamptz NOT NULL DEFAULT clock_timestamp());
	CREATE TABLE %[2]s (
		row_id     bigserial   PRIMARY KEY,
		order_no   bigint      NOT NULL,
		amount     bigint      NOT NULL,
		message_id uuid        NOT NULL,
		worker     int         NOT NULL);
	CREATE TABLE %[3]s (
		row_id       bigserial PRIMARY KEY,
		order_no     bigint    NOT NULL,
		amount       bigint    NOT NULL,
		message_id   uuid      NOT NULL,
		causation_id uuid      NOT NULL,
		worker       int       NOT NULL);
	CREATE INDEX ON %[3]s (order_no);
	%[4]s`, t.orders(), t.charges(), t.receipts(), faultsDDL(t))
	if err := e.createTables(ctx, ddl, t.orders(), t.charges(), t.receipts(), t.faults(), t.dedupe(), t.outbox()); err != nil {
		return err
	}
	if err := e.migrateInbox(ctx, t); err != nil {
		return err
	}
	store, err := pgoutbox.New(e.pool, pgoutbox.WithTable(t.outbox()))
	if err != nil {
		return err
	}
	err = store.Migrate(ctx)
	o.channel = store.Channel()
	_ = store.Close()
	if err != nil {
		return fmt.Errorf("outbox table: %w", err)
	}
	if err := e.declareQueue(o.queue); err != nil {
		return err
	}
	if err := e.createTopic(ctx, o.topic); err != nil {
		return err
	}
	for i := range e.opt.relays {
		o.relays = append(o.relays, e.newProc(fmt.Sprintf("relay %d", i+1), o.config(roleRelay)))
	}
	o.billing = e.newProc("billing", o.config(roleBilling))
	o.receipts = e.newProc("receipts", o.config(roleReceipts))
	return o.plan(ctx)
}

// plan gives each order its amount (from the seed) and computes the IDs its
// two messages must get: order.placed from its key, payment.captured from
// order.placed.
func (o *outboxRun) plan(ctx context.Context) error {
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	o.orders = make([]order, o.n)
	for i := range o.orders {
		no := int64(i + 1)
		placed, paid := o.placed(no, 0), o.paid(no, 0)
		l, err := publisher.IDs(ctx, gen, &placed)
		if err != nil {
			return err
		}
		paid.CausationID = l.MessageID
		lp, err := publisher.IDs(ctx, gen, &paid)
		if err != nil {
			return err
		}
		amount := 100 + int64(mix(o.e.opt.seed^uint64(no)*0x9e3779b97f4a7c15)%99_900)
		o.orders[i] = order{no: no, amount: amount, placedID: l.MessageID, paymentID: lp.MessageID}
	}
	return nil
}

// placed and paid are order no's messages (the body aside, the fields the
// IDs derive from).
func (o *outboxRun) placed(no, amount int64) publisher.Message {
	body, _ := json.Marshal(orderEvent{Run: o.e.run, Order: no, Amount: amount})
	return publisher.Message{Type: typeOrderPlaced, Key: []any{o.e.run, no}, Body: body}
}

func (o *outboxRun) paid(no, amount int64) publisher.Message {
	body, _ := json.Marshal(orderEvent{Run: o.e.run, Order: no, Amount: amount})
	return publisher.Message{Type: typePaymentCaptured, Key: []any{o.e.run, no}, Body: body}
}

func (o *outboxRun) config(role string) func(gen int) workerConfig {
	return func(gen int) workerConfig {
		opt := o.e.opt
		c := workerConfig{
			role: role, amqp: o.e.userURL, postgres: opt.postgres, kafka: o.e.kafkaAddr,
			queue: o.queue, topic: o.topic, group: o.group, tables: o.tables, scope: role,
			chances: opt.chances(), lease: opt.lease, timeout: opt.lease / 2,
			gen: gen, noDedupe: opt.noDedupe, verbose: opt.verbose,
		}
		switch role {
		case roleBilling:
			c.rabbit = true
			c.chances.dropShare = 0 // the receipts drop, so lost = dropped
		case roleReceipts:
			c.kafkaOn = true
		}
		return c
	}
}

func (o *outboxRun) procs() []*proc {
	return append([]*proc{o.billing, o.receipts}, o.relays...)
}

func (o *outboxRun) chaos(ctx context.Context) (outboxResult, error) {
	e := o.e
	res := outboxResult{orders: int64(o.n)}
	e.logf("outbox run %s: %d orders → outbox %s → %d relays → RabbitMQ queue %s → billing (charges, payment.captured into the outbox) → relays → Kafka topic %s → receipts",
		e.run, o.n, o.tables.outbox(), len(o.relays), o.queue, o.topic)
	e.logf("charges and receipts go to PostgreSQL tables %s and %s (no unique key); handler attempts fail %.0f%% of the time",
		o.tables.charges(), o.tables.receipts(), 100*e.opt.failRate)
	if e.opt.dropShare > 0 {
		e.logf("the receipts handler acknowledges %.1f%% of the payments without a receipt (-drop-share)", 100*e.opt.dropShare)
	}
	err := o.scenario(ctx)
	countCtx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		countCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	var wg sync.WaitGroup
	for _, p := range o.procs() {
		wg.Go(p.stop)
	}
	wg.Wait()
	res.kinds, res.missedFaults = tally(o.writeFaults, o.consFaults)
	res.workerProblems = procProblems(o.procs())
	if cerr := o.count(countCtx, &res); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return res, err
}

func (o *outboxRun) scenario(ctx context.Context) error {
	o.planFaults()
	for _, p := range o.procs() {
		if err := p.start(); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	wg.Go(func() { o.e.fireAsApplied(bg, o.consFaults, int64(o.n), o.appliedNow) })
	wg.Go(func() { o.progress(bg) })

	if err := o.write(ctx); err != nil {
		return err
	}
	o.e.logf("wrote all %d orders (%d transactions failed and were written again)", o.written.Load(), o.writeErrors.Load())
	left, err := o.e.drain(ctx, o.procs(), o.consFaults, int64(o.n), o.backlog)
	if err != nil {
		return err
	}
	if !left.empty() {
		return fmt.Errorf("workers did not drain: %+v", left)
	}
	stopBG()
	wg.Wait()
	o.replayed, o.replayNew, err = o.e.replay(ctx, o.e.mainKafka(), o.config(roleReceipts)(0), o.receiptRows)
	return err
}

// planFaults lays out the faults: write faults fire as orders are written,
// consume faults as receipts are; both hold the writers back until
// injected, so that each lands while orders are still on their way, except
// the PostgreSQL restart, which the writers must live through.
func (o *outboxRun) planFaults() {
	e := o.e
	kill := func(name string, at float64) *fault {
		return &fault{kind: connKill, name: name, at: at, do: func(ctx context.Context) error {
			if err := e.killConnections(ctx); err != nil {
				return err
			}
			e.logf("fault: RabbitMQ closed every connection of the run's user (%d orders written)", o.written.Load())
			return nil
		}}
	}
	sigkill := func(kind faultKind, p *proc, name string, at float64) *fault {
		return &fault{kind: kind, name: name, at: at, do: p.kill}
	}
	relay := func(i int) *proc { return o.relays[i%len(o.relays)] }
	o.writeFaults = append(o.writeFaults,
		kill("close RabbitMQ connections while writing", 0.15),
		sigkill(relayKill, relay(0), "SIGKILL relay 1 while writing", 0.30))
	if e.opt.restartPostgres != "" {
		o.writeFaults = append(o.writeFaults, &fault{kind: pgRestart, name: "restart PostgreSQL while writing", at: 0.45, do: e.restartPostgres, meanwhile: true})
	}
	o.writeFaults = append(o.writeFaults,
		&fault{kind: kafkaRestart, name: "restart the Kafka broker while writing", at: 0.85, do: e.restartKafka})
	o.consFaults = append(o.consFaults,
		sigkill(consumerKill, o.billing, "SIGKILL the billing process", 0.10),
		sigkill(relayKill, relay(1), "SIGKILL relay 2", 0.20),
		&fault{kind: republishKind, name: "publish dispatched records again", at: 0.30, do: o.republish},
		kill("close RabbitMQ connections while consuming", 0.40),
		sigkill(consumerKill, o.receipts, "SIGKILL the receipts process", 0.50),
		&fault{kind: kafkaRestart, name: "restart the Kafka broker while consuming", at: 0.60, do: e.restartKafka},
		sigkill(relayKill, relay(0), "SIGKILL relay 1 again", 0.70))
}

// republish makes a fifth of the dispatched records pending again, as if
// their relay had published them and then lost the outcome (a database
// crash forgets the last outcomes, which are committed without waiting for
// the disk): the relays publish them again with the same IDs, and the
// consumers must drop the copies.
func (o *outboxRun) republish(ctx context.Context) error {
	tag, err := o.e.pool.Exec(ctx, "UPDATE "+o.tables.outbox()+
		" SET state = 'pending', due_at = clock_timestamp(), done_at = NULL WHERE state = 'dispatched' AND random() < 0.2")
	if err != nil {
		return err
	}
	if _, err := o.e.pool.Exec(ctx, "SELECT pg_notify($1, '')", o.channel); err != nil {
		return err
	}
	o.republished.Add(tag.RowsAffected())
	o.e.logf("fault: %d dispatched outbox records made pending again", tag.RowsAffected())
	return nil
}

// write places the orders from several goroutines: each order, with its
// order.placed, in one transaction, written again when the transaction
// fails (a retry writes nothing twice: the order's insert does nothing when
// it exists and the outbox stores a message ID once). The writers stay at
// most a fifth of the orders ahead of the receipts, and wait for a consume
// fault due half of that behind them, so the faults find work at every
// stage.
func (o *outboxRun) write(ctx context.Context) error {
	e := o.e
	store, err := pgoutbox.New(e.pool, pgoutbox.WithTable(o.tables.outbox()))
	if err != nil {
		return err
	}
	defer store.Close()
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	pub, err := pgoutbox.NewPublisher(store, destOrders, gen)
	if err != nil {
		return err
	}
	g := newGate(o.writeFaults, int64(o.n))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var faultsWG sync.WaitGroup
	faultsWG.Go(func() { g.run(wctx, e, o.claimed.Load) })
	defer faultsWG.Wait()
	window := max(int64(100), int64(o.n)/5)

	const writers = 4
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := o.claimed.Add(1) - 1
				if i >= int64(o.n) || !g.wait(wctx, i) {
					return
				}
				for i-o.applied.Load() > window || !o.consumeFaultsTried(i-window/2) {
					if !sleep(wctx, 10*time.Millisecond) {
						return
					}
				}
				ord := o.orders[i]
				for {
					err := pgx.BeginFunc(wctx, e.pool, func(tx pgx.Tx) error {
						if _, err := tx.Exec(wctx, "INSERT INTO "+o.tables.orders()+" (order_no, amount) VALUES ($1, $2) ON CONFLICT (order_no) DO NOTHING",
							ord.no, ord.amount); err != nil {
							return err
						}
						return pub.Publish(pgoutbox.NewContext(wctx, tx), o.placed(ord.no, ord.amount))
					})
					if err == nil {
						break
					}
					if wctx.Err() != nil {
						return
					}
					o.writeErrors.Add(1)
					if !sleep(wctx, 50*time.Millisecond) {
						return
					}
				}
				o.written.Add(1)
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// consumeFaultsTried reports whether every consume fault due by the time
// the receipts reach k was tried.
func (o *outboxRun) consumeFaultsTried(k int64) bool {
	for _, f := range o.consFaults {
		if int64(math.Ceil(f.at*float64(o.n))) <= k && !f.tried.Load() {
			return false
		}
	}
	return true
}

func (o *outboxRun) progress(ctx context.Context) {
	every := 2 * time.Second
	if o.n > 2000 {
		every = 5 * time.Second
	}
	tick := time.Now()
	for sleep(ctx, 100*time.Millisecond) {
		n, err := o.appliedNow(ctx)
		if err == nil {
			o.applied.Store(n)
		}
		if time.Since(tick) < every {
			continue
		}
		tick = time.Now()
		var pending, charges int64
		_ = o.e.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+o.tables.outbox()+" WHERE state = 'pending'), (SELECT count(*) FROM "+o.tables.charges()+")").
			Scan(&pending, &charges)
		o.e.logf("orders written %d/%d, outbox pending %d, charges %d, receipts (and drops) %d/%d",
			o.written.Load(), o.n, pending, charges, o.applied.Load(), o.n)
	}
}

// appliedNow counts the orders with a receipt or whose payment was dropped
// on purpose.
func (o *outboxRun) appliedNow(ctx context.Context) (int64, error) {
	var n int64
	err := o.e.pool.QueryRow(ctx, "SELECT (SELECT count(DISTINCT order_no) FROM "+o.tables.receipts()+
		") + (SELECT count(DISTINCT message_id) FROM "+o.tables.faults()+" WHERE kind = 'drop')").Scan(&n)
	return n, err
}

func (o *outboxRun) receiptRows(ctx context.Context) (int64, error) {
	var n int64
	err := o.e.pool.QueryRow(ctx, "SELECT count(*) FROM "+o.tables.receipts()).Scan(&n)
	return n, err
}

func (o *outboxRun) backlog(ctx context.Context) (backlog, error) {
	var b backlog
	var err error
	if b.applied, err = o.appliedNow(ctx); err != nil {
		return b, err
	}
	if err := o.e.pool.QueryRow(ctx, "SELECT count(*) FROM "+o.tables.outbox()+" WHERE state = 'pending'").Scan(&b.pending); err != nil {
		return b, err
	}
	if b.queue, err = o.e.queueLength(o.queue); err != nil {
		return b, err
	}
	if b.lag, _, err = o.e.mainKafka().lag(ctx, o.topic, o.group); err != nil {
		return b, err
	}
	return b, nil
}

// count checks every charge and receipt against its order and the IDs its
// messages must have, and the outbox against the orders.
func (o *outboxRun) count(ctx context.Context, res *outboxResult) error {
	e, t := o.e, o.tables
	byNo := make(map[int64]order, len(o.orders))
	for _, ord := range o.orders {
		byNo[ord.no] = ord
	}
	// Orders: every one written once, with its amount.
	var written int64
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+t.orders()).Scan(&written); err != nil {
		return fmt.Errorf("count orders: %w", err)
	}
	res.notWritten = int64(o.n) - written
	var wrongOrders int64
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+t.orders()+" WHERE order_no NOT BETWEEN 1 AND $1", o.n).Scan(&wrongOrders); err != nil {
		return fmt.Errorf("count orders: %w", err)
	}
	res.unexpected += wrongOrders
	// The outbox.
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE destination = $1), count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead') FROM "+t.outbox(),
		destPayments).Scan(&res.events, &res.pending, &res.dead); err != nil {
		return fmt.Errorf("count outbox: %w", err)
	}
	// Charges and receipts, each against its order.
	charged, receipted := map[int64]int64{}, map[int64]int64{}
	check := func(what, query string, seen map[int64]int64, ok func(ord order, amount int64, id, cause uuid.UUID) bool) error {
		rows, err := e.pool.Query(ctx, query)
		if err != nil {
			return fmt.Errorf("read %s: %w", what, err)
		}
		defer rows.Close()
		for rows.Next() {
			var no, amount int64
			var id, cause uuid.UUID
			if err := rows.Scan(&no, &amount, &id, &cause); err != nil {
				return fmt.Errorf("read %s: %w", what, err)
			}
			seen[no]++
			ord, known := byNo[no]
			switch {
			case !known:
				res.unexpected++
			case !ok(ord, amount, id, cause):
				res.mismatched++
			}
		}
		return rows.Err()
	}
	if err := check("charges", "SELECT order_no, amount, message_id, message_id FROM "+t.charges(), charged,
		func(ord order, amount int64, id, _ uuid.UUID) bool { return amount == ord.amount && id == ord.placedID }); err != nil {
		return err
	}
	if err := check("receipts", "SELECT order_no, amount, message_id, causation_id FROM "+t.receipts(), receipted,
		func(ord order, amount int64, id, cause uuid.UUID) bool {
			return amount == ord.amount && id == ord.paymentID && cause == ord.placedID
		}); err != nil {
		return err
	}
	for no, n := range charged {
		res.charges += n
		if _, ok := byNo[no]; ok {
			res.chargedOrders++
		}
	}
	for _, ord := range o.orders {
		if charged[ord.no] > 1 || receipted[ord.no] > 1 {
			res.duplicates++
		}
		if receipted[ord.no] == 0 {
			res.lost++
		}
		res.effects += receipted[ord.no]
	}
	for no, n := range receipted {
		if _, ok := byNo[no]; !ok {
			res.effects += n
		}
	}
	if err := countFaults(ctx, e, t, &res.handlerFailures, &res.panics, &res.dropped); err != nil {
		return err
	}
	res.republished, res.writeErrors = o.republished.Load(), o.writeErrors.Load()
	res.replayNew, res.replayed = o.replayNew, o.replayed
	if n, err := e.queueLength(o.queue); err == nil {
		res.leftInQueue = n
	}
	res.counted = true
	return nil
}
