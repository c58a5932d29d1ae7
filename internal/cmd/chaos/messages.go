package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// namespace of the run's message IDs.
const namespace = "chaos.uuidforge.example"

// planned is one distinct message and the transport it goes through.
type planned struct {
	msg    publisher.Message
	id     uuid.UUID
	rabbit bool
}

// messageRun is the message scenario: n distinct messages, each published
// two or three times, through RabbitMQ and Kafka into a consumer process
// that writes one row per message inside the inbox.
type messageRun struct {
	e                   *env
	n                   int
	rabbit, kafka       bool
	queue, topic, group string
	tables              tables

	consumer *proc

	msgs   []planned
	copies []int32 // indexes into msgs, in publishing order

	claimed   atomic.Int64 // copies handed to publishers
	published atomic.Int64 // copies confirmed by the brokers

	pubFaults, consFaults []*fault
	replayed, replayNew   int64 // set by replay
}

// messageResult is what the message scenario counted.
type messageResult struct {
	messages, effects, distinct, duplicates, lost, unexpected int64
	misrouted, dropped                                        int64
	replayNew, replayed, leftInQueue                          int64
	extraCopies, handlerFailures, panics                      int64
	kinds                                                     map[faultKind]int64
	missedFaults, workerProblems                              []string
	counted                                                   bool
}

func (r messageResult) faults() int64 {
	return r.extraCopies + r.handlerFailures + r.kinds[connKill] + r.kinds[consumerKill] + r.kinds[kafkaRestart]
}

func (r messageResult) problems() []string {
	if !r.counted {
		return []string{"the effects could not be counted"}
	}
	var p []string
	if r.effects != r.messages {
		p = append(p, fmt.Sprintf("%d effects for %d messages", r.effects, r.messages))
	}
	if r.duplicates != 0 {
		p = append(p, fmt.Sprintf("%d messages applied more than once", r.duplicates))
	}
	if r.lost != 0 {
		p = append(p, fmt.Sprintf("%d messages never applied", r.lost))
	}
	if r.unexpected != 0 {
		p = append(p, fmt.Sprintf("%d rows for IDs that were never sent", r.unexpected))
	}
	if r.misrouted != 0 {
		p = append(p, fmt.Sprintf("%d messages applied from a source they were not sent to", r.misrouted))
	}
	if r.replayNew != 0 {
		p = append(p, fmt.Sprintf("the replay added %d effects", r.replayNew))
	}
	if r.leftInQueue != 0 {
		p = append(p, fmt.Sprintf("%d messages left in the queue", r.leftInQueue))
	}
	for _, f := range r.missedFaults {
		p = append(p, "fault not injected: "+f)
	}
	return append(p, r.workerProblems...)
}

// print writes the scenario's three result lines; the last is the
// "chaos:" line.
func (r messageResult) print(e *env) {
	e.printf("checks: rows=%d distinct=%d unexpected=%d misrouted=%d replay_new_effects=%d replayed_records=%d left_in_queue=%d\n",
		r.effects, r.distinct, r.unexpected, r.misrouted, r.replayNew, r.replayed, r.leftInQueue)
	e.printf("faults: extra_copies=%d handler_failures=%d (panics %d) rabbitmq_connection_kills=%d consumer_sigkills=%d kafka_restarts=%d dropped=%d\n",
		r.extraCopies, r.handlerFailures, r.panics, r.kinds[connKill], r.kinds[consumerKill], r.kinds[kafkaRestart], r.dropped)
	e.printf("chaos: messages=%d effects=%d duplicates=%d lost=%d faults=%d\n",
		r.messages, r.effects, r.duplicates, r.lost, r.faults())
}

// runMessages sets the message scenario up, runs it, prints its lines and
// returns its problems; an error when it could not set up.
func runMessages(ctx context.Context, e *env) ([]string, error) {
	opt := e.opt
	m := &messageRun{
		e: e, n: opt.n, rabbit: opt.rabbit(), kafka: opt.kafka(),
		queue: "chaos." + e.run + ".queue", topic: "chaos." + e.run + ".topic", group: "chaos-" + e.run,
		tables: tables{prefix: "chaos_" + e.run},
	}
	if err := m.setup(ctx); err != nil {
		return nil, err
	}
	res, err := m.chaos(ctx)
	problems := res.problems()
	if err != nil {
		e.warnf("messages: %v", err)
		problems = append(problems, err.Error())
	}
	res.print(e)
	return problems, nil
}

func (m *messageRun) setup(ctx context.Context) error {
	e := m.e
	// The effects table (no unique key, on purpose), the faults table and
	// the dedupe store's table.
	ddl := fmt.Sprintf(`CREATE TABLE %[1]s (
		row_id     bigserial   PRIMARY KEY,
		message_id uuid        NOT NULL,
		source     text        NOT NULL,
		worker     int         NOT NULL,
		attempt    int         NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT clock_timestamp());
	CREATE INDEX ON %[1]s (message_id);
	%[2]s`, m.tables.effects(), faultsDDL(m.tables))
	if err := e.createTables(ctx, ddl, m.tables.effects(), m.tables.faults(), m.tables.dedupe()); err != nil {
		return err
	}
	if err := e.migrateInbox(ctx, m.tables); err != nil {
		return err
	}
	if m.rabbit {
		if err := e.declareQueue(m.queue); err != nil {
			return err
		}
	}
	if m.kafka {
		if err := e.createTopic(ctx, m.topic); err != nil {
			return err
		}
	}
	m.consumer = e.newProc("consumer", m.workerConfig)
	return m.plan(ctx)
}

// plan makes the distinct messages, computes their IDs as the publisher
// will, and lays out the copies: two per message, three for a quarter of
// them, shuffled, all from the seed.
func (m *messageRun) plan(ctx context.Context) error {
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	seed := m.e.opt.seed
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	m.msgs = make([]planned, m.n)
	for i := range m.msgs {
		rabbit := m.rabbit && (!m.kafka || i%2 == 0)
		via := "kafka"
		if rabbit {
			via = "rabbitmq"
		}
		msg := publisher.Message{
			Type: "chaos.event", Key: []any{m.e.run, i},
			Body: fmt.Appendf(nil, `{"run":%q,"n":%d,"via":%q}`, m.e.run, i, via),
		}
		l, err := publisher.IDs(ctx, gen, &msg)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		m.msgs[i] = planned{msg: msg, id: l.MessageID, rabbit: rabbit}
		m.copies = append(m.copies, int32(i), int32(i))
		if rng.IntN(4) == 0 {
			m.copies = append(m.copies, int32(i))
		}
	}
	rng.Shuffle(len(m.copies), func(i, j int) { m.copies[i], m.copies[j] = m.copies[j], m.copies[i] })
	return nil
}

func (m *messageRun) workerConfig(gen int) workerConfig {
	opt := m.e.opt
	return workerConfig{
		role: roleMessages, amqp: m.e.userURL, postgres: opt.postgres, kafka: m.e.kafkaAddr,
		queue: m.queue, topic: m.topic, group: m.group, tables: m.tables, scope: "chaos",
		chances: opt.chances(), lease: opt.lease, timeout: opt.lease / 2,
		gen: gen, rabbit: m.rabbit, kafkaOn: m.kafka, noDedupe: opt.noDedupe, verbose: opt.verbose,
	}
}

func (m *messageRun) counts() (rabbit, kafka int) {
	for _, p := range m.msgs {
		if p.rabbit {
			rabbit++
		} else {
			kafka++
		}
	}
	return rabbit, kafka
}

// chaos runs the whole scenario and counts the result.
func (m *messageRun) chaos(ctx context.Context) (messageResult, error) {
	e := m.e
	res := messageResult{messages: int64(m.n), extraCopies: int64(len(m.copies) - m.n)}
	nr, nk := m.counts()
	e.logf("run %s: %d messages (%d via RabbitMQ queue %s, %d via Kafka topic %s), %d copies published in a seeded order (seed %d)",
		e.run, m.n, nr, m.queue, nk, m.topic, len(m.copies), e.opt.seed)
	e.logf("effects go to PostgreSQL table %s (no unique key); handler attempts fail %.0f%% of the time",
		m.tables.effects(), 100*e.opt.failRate)
	if e.opt.dropShare > 0 {
		e.logf("the handler acknowledges %.1f%% of the messages without applying them (-drop-share)", 100*e.opt.dropShare)
	}

	err := m.scenario(ctx)
	countCtx := ctx
	if ctx.Err() != nil { // still count what happened
		var cancel context.CancelFunc
		countCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	m.consumer.stop()
	res.kinds, res.missedFaults = tally(m.pubFaults, m.consFaults)
	res.workerProblems = procProblems([]*proc{m.consumer})
	if cerr := m.count(countCtx, &res); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return res, err
}

func (m *messageRun) scenario(ctx context.Context) error {
	m.planFaults()
	if err := m.consumer.start(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	wg.Go(func() { m.e.fireAsApplied(bg, m.consFaults, int64(m.n), m.appliedNow) })
	wg.Go(func() { m.progress(bg) })

	if err := m.publish(ctx); err != nil {
		return err
	}
	m.e.logf("published all %d copies (%d confirmed by the brokers)", len(m.copies), m.published.Load())
	left, err := m.e.drain(ctx, []*proc{m.consumer}, m.consFaults, int64(m.n), m.backlog)
	if err != nil {
		return err
	}
	if left.queue != 0 || left.lag != 0 {
		return fmt.Errorf("consumers did not drain: %d messages in the queue, %d records not committed", left.queue, left.lag)
	}
	stopBG()
	wg.Wait()
	if m.kafka {
		m.replayed, m.replayNew, err = m.e.replay(ctx, m.e.mainKafka(), m.workerConfig(0), m.rows)
		return err
	}
	return nil
}

// planFaults lays out the faults: publish faults gate the publishers, so they
// land while copies are in flight; consume faults fire when enough messages
// were applied.
func (m *messageRun) planFaults() {
	e := m.e
	kill := func(name string, at float64) *fault {
		return &fault{kind: connKill, name: name, at: at, do: func(ctx context.Context) error {
			if err := e.killConnections(ctx); err != nil {
				return err
			}
			e.logf("fault: RabbitMQ closed every connection of the run's user (%d copies published)", m.published.Load())
			return nil
		}}
	}
	restart := func(name string, at float64) *fault {
		return &fault{kind: kafkaRestart, name: name, at: at, do: e.restartKafka}
	}
	sigkill := func(name string, at float64) *fault {
		return &fault{kind: consumerKill, name: name, at: at, do: func(ctx context.Context) error {
			if err := m.consumer.kill(ctx); err != nil {
				return err
			}
			// The claims it held stay leased until their lease ends: their
			// messages come back to the next consumer, which waits for the lease.
			var held int64
			_ = e.pool.QueryRow(ctx, "SELECT count(*) FROM "+m.tables.dedupe()+" WHERE state = 'leased' AND expires_at > clock_timestamp()").Scan(&held)
			e.logf("the killed consumer left %d claims leased", held)
			return nil
		}}
	}
	if m.rabbit {
		m.pubFaults = append(m.pubFaults, kill("close RabbitMQ connections while publishing (1)", 0.15))
	}
	if m.kafka {
		m.pubFaults = append(m.pubFaults, restart("restart the Kafka broker while publishing", 0.35))
	}
	if m.rabbit {
		m.pubFaults = append(m.pubFaults,
			kill("close RabbitMQ connections while publishing (2)", 0.55),
			kill("close RabbitMQ connections while publishing (3)", 0.80))
	}
	m.consFaults = append(m.consFaults, sigkill("SIGKILL the consumer process (1)", 0.25))
	if m.rabbit {
		m.consFaults = append(m.consFaults, kill("close RabbitMQ connections while consuming", 0.45))
	}
	m.consFaults = append(m.consFaults, sigkill("SIGKILL the consumer process (2)", 0.60))
	if m.kafka {
		m.consFaults = append(m.consFaults, restart("restart the Kafka broker while consuming", 0.80))
	}
}

// publish sends every copy through its transport's publisher, from several
// goroutines, in chunks. A chunk past a publish fault's threshold waits until
// that fault was injected, while the chunks before it are still in flight.
func (m *messageRun) publish(ctx context.Context) error {
	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	var rp *rabbitpub.Publisher
	if m.rabbit {
		if rp, err = rabbitpub.New(m.e.userURL, gen, rabbitpub.WithConfirmTimeout(5*time.Second), rabbitpub.WithQueue(m.queue)); err != nil {
			return err
		}
		defer rp.Close()
	}
	var kp *kafkapub.Publisher
	if m.kafka {
		if kp, err = kafkapub.New([]string{m.e.kafkaAddr}, m.topic, gen, kafkapub.WithWriteTimeout(3*time.Second)); err != nil {
			return err
		}
		defer kp.Close()
	}

	const chunk, publishers = 50, 6
	total := int64(len(m.copies))
	g := newGate(m.pubFaults, total)
	pubCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var faultsWG sync.WaitGroup
	faultsWG.Go(func() { g.run(pubCtx, m.e, m.claimed.Load) })
	defer faultsWG.Wait()

	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				end := m.claimed.Add(chunk)
				start := end - chunk
				if start >= total {
					return
				}
				end = min(end, total)
				if !g.wait(pubCtx, start) {
					return
				}
				var rm, km []publisher.Message
				for _, i := range m.copies[start:end] {
					if p := m.msgs[i]; p.rabbit {
						rm = append(rm, p.msg)
					} else {
						km = append(km, p.msg)
					}
				}
				if len(rm) > 0 {
					if err := rp.PublishBatch(pubCtx, rm...); err != nil {
						errs <- fmt.Errorf("publish to RabbitMQ: %w", err)
						cancel()
						return
					}
				}
				if len(km) > 0 {
					if err := kp.PublishBatch(pubCtx, km...); err != nil {
						errs <- fmt.Errorf("publish to Kafka: %w", err)
						cancel()
						return
					}
				}
				m.published.Add(end - start)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

func (m *messageRun) progress(ctx context.Context) {
	every := 2 * time.Second
	if m.n > 5000 {
		every = 5 * time.Second
	}
	for sleep(ctx, every) {
		rows, _ := m.rows(ctx)
		var failures int64
		_ = m.e.pool.QueryRow(ctx, "SELECT count(*) FROM "+m.tables.faults()+" WHERE kind <> 'drop'").Scan(&failures)
		m.e.logf("published %d/%d copies, effects %d/%d, handler failures so far %d",
			m.published.Load(), len(m.copies), rows, m.n, failures)
	}
}

func (m *messageRun) rows(ctx context.Context) (int64, error) {
	var n int64
	err := m.e.pool.QueryRow(ctx, "SELECT count(*) FROM "+m.tables.effects()).Scan(&n)
	return n, err
}

// appliedNow counts the distinct messages with an effect and those dropped
// on purpose.
func (m *messageRun) appliedNow(ctx context.Context) (int64, error) {
	var n int64
	err := m.e.pool.QueryRow(ctx, "SELECT (SELECT count(DISTINCT message_id) FROM "+m.tables.effects()+
		") + (SELECT count(DISTINCT message_id) FROM "+m.tables.faults()+" WHERE kind = 'drop')").Scan(&n)
	return n, err
}

// backlog reads what the consumer still has to do.
func (m *messageRun) backlog(ctx context.Context) (backlog, error) {
	var b backlog
	var err error
	if b.applied, err = m.appliedNow(ctx); err != nil {
		return b, err
	}
	if m.rabbit {
		if b.queue, err = m.e.queueLength(m.queue); err != nil {
			return b, err
		}
	}
	if m.kafka {
		if b.lag, _, err = m.e.mainKafka().lag(ctx, m.topic, m.group); err != nil {
			return b, err
		}
	}
	return b, nil
}

// count reads the effects table and compares it with the messages sent.
func (m *messageRun) count(ctx context.Context, res *messageResult) error {
	via := make(map[uuid.UUID]string, len(m.msgs))
	for _, p := range m.msgs {
		via[p.id] = m.topic
		if p.rabbit {
			via[p.id] = m.queue
		}
	}
	rows, err := m.e.pool.Query(ctx, "SELECT message_id, count(*), min(source), max(source) FROM "+m.tables.effects()+" GROUP BY message_id")
	if err != nil {
		return fmt.Errorf("count effects: %w", err)
	}
	got := map[uuid.UUID]int64{}
	for rows.Next() {
		var id uuid.UUID
		var n int64
		var lo, hi string
		if err := rows.Scan(&id, &n, &lo, &hi); err != nil {
			rows.Close()
			return fmt.Errorf("count effects: %w", err)
		}
		got[id] = n
		if v, ok := via[id]; ok && (lo != v || hi != v) {
			res.misrouted++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count effects: %w", err)
	}
	for id, n := range got {
		res.effects += n
		res.distinct++
		if n > 1 {
			res.duplicates++
		}
		if _, ok := via[id]; !ok {
			res.unexpected++
		}
	}
	for id := range via {
		if got[id] == 0 {
			res.lost++
		}
	}
	if err := countFaults(ctx, m.e, m.tables, &res.handlerFailures, &res.panics, &res.dropped); err != nil {
		return err
	}
	res.replayNew, res.replayed = m.replayNew, m.replayed
	if m.rabbit {
		if n, err := m.e.queueLength(m.queue); err == nil {
			res.leftInQueue = n
		}
	}
	res.counted = true
	return nil
}
