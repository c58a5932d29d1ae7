package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// The scale scenario's Kafka cluster: three in-process brokers, topics of
// six partitions (two per member with three appliers).
const (
	scaleBrokers    = 3
	scalePartitions = 6
)

// Fault kinds of the scale scenario.
const (
	nodeStop    faultKind = "rabbitmq_node_stops"
	primaryKill faultKind = "redis_primary_kills"
	leaderMoves faultKind = "kafka_leader_moves"
	scaleOut    faultKind = "scale_outs"
	scaleIn     faultKind = "scale_ins"
	forgetKind  faultKind = "redis_forgets" // -forget: not a fault, a store that loses its completions
)

// scaleRun is the scale scenario: originals through a RabbitMQ quorum queue
// to competing forwarder processes (Redis Cluster dedupe) that publish a
// derived message each to Kafka, where a group of applier processes
// (PostgreSQL inbox) writes one effect per derived message.
type scaleRun struct {
	e                   *env
	n, procs            int
	measure             bool
	queue, topic, group string
	tables              tables

	rabbit *rabbitCluster
	redis  *redisCluster
	kafka  kafkaCluster
	pub    *rabbitpub.Publisher // the coordinator's, on the queue

	forwarders, appliers []*proc
	extra                *proc // the applier the scale-out fault adds

	msgs   []scaleMsg
	copies []int32 // indexes into msgs, in publishing order

	claimed, published atomic.Int64 // copies handed to publishers, confirmed
	forwarded          atomic.Int64 // records in the topic (progress of stage 1)
	applied            atomic.Int64 // distinct effects and drops (progress of stage 2)
	moves              atomic.Int64 // partition leader moves
	forgotten          atomic.Int64 // Redis records deleted by -forget

	faults []*fault
	bg     context.Context // ends when the workers have drained
	bgWG   sync.WaitGroup  // what runs in bg

	began                        time.Time
	elapsed                      time.Duration // publishing to drained
	publishRate, fwdRate, fwdCPS float64       // measured, per second
	applyRate                    float64
	recheckNew, recheckProcessed int64
	recheckAnswered              int64
	replayed, replayNew          int64
}

// scaleMsg is one original and the ID its derived message must get.
type scaleMsg struct {
	msg         publisher.Message
	id, derived uuid.UUID
}

// scaleResult is what the scale scenario counted.
type scaleResult struct {
	procs, messages, effects, distinct, duplicates, lost, unexpected, mismatched int64
	fwdProcessed, fwdDuplicates, forwardedTwice                                  int64
	recheckNew, recheckProcessed, recheckAnswered                                int64
	replayNew, replayed, leftInQueue, deadLetters                                int64
	rebalances, extraCopies, handlerFailures, panics, dropped, moves, forgotten  int64
	kinds                                                                        map[faultKind]int64
	missedFaults, workerProblems                                                 []string
	wantRebalance, counted                                                       bool
}

// faults sums the faults injected (not -forget, which is a sabotage).
func (r scaleResult) faults() int64 {
	return r.extraCopies + r.handlerFailures + r.kinds[consumerKill] + r.kinds[nodeStop] + r.kinds[primaryKill] +
		r.moves + r.kinds[scaleOut] + r.kinds[scaleIn]
}

func (r scaleResult) problems() []string {
	if !r.counted {
		return []string{"scale: the effects could not be counted"}
	}
	var p []string
	add := func(format string, args ...any) { p = append(p, "scale: "+fmt.Sprintf(format, args...)) }
	if r.effects != r.messages {
		add("%d effects for %d messages", r.effects, r.messages)
	}
	if r.duplicates != 0 {
		add("%d messages applied more than once", r.duplicates)
	}
	if r.lost != 0 {
		add("%d messages never applied", r.lost)
	}
	if r.unexpected != 0 {
		add("%d effects of messages never sent", r.unexpected)
	}
	if r.mismatched != 0 {
		add("%d effects whose causation or number does not match their message", r.mismatched)
	}
	if r.forwardedTwice != 0 {
		add("%d messages completed twice by the forwarders (a completion the Redis store reported was lost)", r.forwardedTwice)
	}
	if r.recheckAnswered != r.messages {
		add("the messages published again after the run: %d of %d answered", r.recheckAnswered, r.messages)
	}
	if r.recheckNew != 0 || r.recheckProcessed != 0 {
		add("the messages published again after the run were forwarded again: %d derived records, %d processed", r.recheckNew, r.recheckProcessed)
	}
	if r.replayNew != 0 {
		add("the replay added %d effects", r.replayNew)
	}
	if r.leftInQueue != 0 {
		add("%d messages left in the queue", r.leftInQueue)
	}
	if r.deadLetters != 0 {
		add("%d dead letters", r.deadLetters)
	}
	if r.wantRebalance && r.rebalances == 0 {
		add("no rebalance of the appliers' group was seen")
	}
	for _, f := range r.missedFaults {
		add("fault not injected: %s", f)
	}
	return append(p, r.workerProblems...)
}

// print writes the scenario's result lines; the last is the "chaos-scale:"
// line.
func (r scaleResult) print(e *env) {
	e.printf("scale-checks: rows=%d distinct=%d unexpected=%d mismatched=%d forward_processed=%d forward_duplicates=%d forwarded_twice=%d recheck_answered=%d recheck_forwarded=%d replay_new_effects=%d replayed_records=%d left_in_queue=%d dead_letters=%d\n",
		r.effects, r.distinct, r.unexpected, r.mismatched, r.fwdProcessed, r.fwdDuplicates, r.forwardedTwice,
		r.recheckAnswered, r.recheckNew, r.replayNew, r.replayed, r.leftInQueue, r.deadLetters)
	e.printf("scale-faults: extra_copies=%d handler_failures=%d (panics %d) consumer_sigkills=%d scale_outs=%d scale_ins=%d rabbitmq_node_stops=%d redis_primary_kills=%d kafka_leader_moves=%d dropped=%d forgotten=%d\n",
		r.extraCopies, r.handlerFailures, r.panics, r.kinds[consumerKill], r.kinds[scaleOut], r.kinds[scaleIn],
		r.kinds[nodeStop], r.kinds[primaryKill], r.moves, r.dropped, r.forgotten)
	e.printf("chaos-scale: processes=%d messages=%d effects=%d duplicates=%d lost=%d rebalances=%d faults=%d\n",
		r.procs, r.messages, r.effects, r.duplicates, r.lost, r.rebalances, r.faults())
}

// runScale sets the scale scenario up, runs it, prints its lines and
// returns its problems; an error when it could not set up.
func runScale(ctx context.Context, e *env) ([]string, error) {
	s := &scaleRun{
		e: e, n: e.opt.scale, procs: e.opt.procs, measure: e.opt.measure,
		queue: "chaos." + e.run + ".scale", topic: "chaos." + e.run + ".scale-forwarded", group: "chaos-" + e.run + "-apply",
		tables: tables{prefix: "chaos_" + e.run + "_sc"},
	}
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	res, err := s.chaos(ctx)
	problems := res.problems()
	if err != nil {
		e.warnf("scale: %v", err)
		problems = append(problems, "scale: "+err.Error())
	}
	s.printThroughput()
	res.print(e)
	return problems, nil
}

func (s *scaleRun) setup(ctx context.Context) error {
	e, t := s.e, s.tables
	if err := e.holdSetups(ctx); err != nil {
		return err
	}
	s.rabbit, s.redis = newRabbitCluster(e.opt.ctl), newRedisCluster()
	level := slog.LevelError
	if e.opt.verbose {
		level = slog.LevelWarn
	}
	redis.SetLogger(redisLog{slog.New(slog.NewTextHandler(e.errOut, &slog.HandlerOptions{Level: level}))})
	e.onCleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if n, err := s.redis.deleteKeys(ctx, t.redisPrefix()); err != nil {
			e.warnf("scale: delete the run's Redis keys (%d deleted): %v", n, err)
		}
	})
	e.onCleanup(func() { s.rabbit.deleteQueues(s.queue, s.queue+consumer.DeadLetterSuffix) })

	broker, err := kafkatest.New(kafkatest.WithBrokers(scaleBrokers), kafkatest.WithPartitions(scalePartitions),
		kafkatest.WithMinSessionTimeout(time.Second))
	if err != nil {
		return err
	}
	e.onCleanup(broker.Close)
	s.kafka = kafkaCluster{broker: broker, partitions: scalePartitions}
	if err := broker.CreateTopic(ctx, s.topic, scalePartitions); err != nil {
		return err
	}

	ddl := fmt.Sprintf(`CREATE TABLE %[1]s (
		row_id       bigserial   PRIMARY KEY,
		message_id   uuid        NOT NULL,
		causation_id uuid        NOT NULL,
		n            bigint      NOT NULL,
		worker       int         NOT NULL,
		attempt      int         NOT NULL,
		applied_at   timestamptz NOT NULL DEFAULT clock_timestamp());
	CREATE INDEX ON %[1]s (message_id);
	CREATE TABLE %[2]s (
		message_id uuid        NOT NULL,
		result     text        NOT NULL,
		worker     int         NOT NULL,
		at         timestamptz NOT NULL DEFAULT clock_timestamp());
	CREATE TABLE %[3]s (
		generation int         NOT NULL,
		worker     int         NOT NULL,
		at         timestamptz NOT NULL DEFAULT clock_timestamp());
	%[4]s`, t.effects(), t.forwarded(), t.generations(), faultsDDL(t))
	if err := e.createTables(ctx, ddl, t.effects(), t.forwarded(), t.generations(), t.faults(), t.dedupe()); err != nil {
		return err
	}
	if err := e.migrateInbox(ctx, t); err != nil {
		return err
	}

	gen, err := forge.New(namespace)
	if err != nil {
		return err
	}
	s.pub, err = rabbitpub.New(s.rabbit.urls[0], gen, rabbitpub.WithQueue(s.queue), rabbitpub.WithFailoverURLs(s.rabbit.others(0)...),
		rabbitpub.WithTopology(scaleTopology(s.queue)), rabbitpub.WithConfirmTimeout(5*time.Second))
	if err != nil {
		return err
	}
	e.onCleanup(func() { _ = s.pub.Close() })
	if err := s.pub.Ping(ctx); err != nil { // declares the queues
		return err
	}

	for i := range s.procs {
		s.forwarders = append(s.forwarders, e.newProc(fmt.Sprintf("forwarder %d", i+1), s.forwardConfig))
		s.appliers = append(s.appliers, e.newProc(fmt.Sprintf("applier %d", i+1), s.applyConfig))
	}
	s.extra = e.newProc(fmt.Sprintf("applier %d", s.procs+1), s.applyConfig)
	return s.plan(ctx, gen)
}

// plan makes the originals, computes their IDs and their derived
// messages' IDs as the publishers will, and lays out the copies: two per
// message, three for a quarter of them, shuffled, all from the seed.
func (s *scaleRun) plan(ctx context.Context, gen *forge.Generator) error {
	seed := s.e.opt.seed
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e9955bd1e995))
	s.msgs = make([]scaleMsg, s.n)
	for i := range s.msgs {
		body, err := json.Marshal(scaleBody{Run: s.e.run, N: int64(i)})
		if err != nil {
			return err
		}
		orig := publisher.Message{Type: typeScaleOriginal, Key: []any{s.e.run, i}, Body: body}
		l, err := publisher.IDs(ctx, gen, &orig)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		derived := publisher.Message{Type: typeScaleForwarded, Key: []any{s.e.run, int64(i)}, Body: body, CausationID: l.MessageID}
		ld, err := publisher.IDs(ctx, gen, &derived)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		s.msgs[i] = scaleMsg{msg: orig, id: l.MessageID, derived: ld.MessageID}
		s.copies = append(s.copies, int32(i), int32(i))
		if rng.IntN(4) == 0 {
			s.copies = append(s.copies, int32(i))
		}
	}
	rng.Shuffle(len(s.copies), func(i, j int) { s.copies[i], s.copies[j] = s.copies[j], s.copies[i] })
	return nil
}

// forwardConfig is forwarder gen's configuration: it starts on node gen
// mod 3 and fails over to the others.
func (s *scaleRun) forwardConfig(gen int) workerConfig {
	opt := s.e.opt
	node := gen % len(s.rabbit.urls)
	ch := opt.chances()
	ch.dropShare = 0 // the appliers drop, so lost = dropped
	if s.measure {
		ch.failRate = 0
	}
	return workerConfig{
		role: roleForward, amqp: s.rabbit.urls[node], failover: strings.Join(s.rabbit.others(node), ","),
		postgres: opt.postgres, kafka: strings.Join(s.kafka.broker.Brokers(), ","), redis: strings.Join(s.redis.addrs, ","),
		queue: s.queue, topic: s.topic, tables: s.tables, scope: "forward",
		chances: ch, lease: opt.lease, timeout: opt.lease / 2, partitions: scalePartitions,
		gen: gen, rabbit: true, noDedupe: opt.noDedupe, verbose: opt.verbose, cpuProfile: opt.cpuProfile,
	}
}

func (s *scaleRun) applyConfig(gen int) workerConfig {
	opt := s.e.opt
	ch := opt.chances()
	if s.measure {
		ch.failRate = 0
	}
	return workerConfig{
		role: roleApply, postgres: opt.postgres, kafka: strings.Join(s.kafka.broker.Brokers(), ","),
		topic: s.topic, group: s.group, tables: s.tables, scope: "apply",
		chances: ch, lease: opt.lease, timeout: opt.lease / 2, partitions: scalePartitions,
		gen: gen, kafkaOn: true, noDedupe: opt.noDedupe, verbose: opt.verbose, cpuProfile: opt.cpuProfile,
	}
}

func (s *scaleRun) procList() []*proc {
	return append(append(append([]*proc{}, s.forwarders...), s.appliers...), s.extra)
}

func (s *scaleRun) chaos(ctx context.Context) (scaleResult, error) {
	e := s.e
	res := scaleResult{procs: int64(s.procs), messages: int64(s.n), extraCopies: int64(len(s.copies) - s.n)}
	e.logf("scale run %s: %d messages (%d copies) → RabbitMQ quorum queue %s on %s → %d forwarders (Redis Cluster store, WithReplicaAcks) → Kafka topic %s (%d brokers, %d partitions) → %d appliers in group %s (PostgreSQL inbox) → table %s",
		e.run, s.n, len(s.copies), s.queue, strings.Join(s.rabbit.nodes, ","), s.procs, s.topic, scaleBrokers, scalePartitions, s.procs, s.group, s.tables.effects())
	var err error
	if s.measure {
		e.logf("measuring: no faults; the forwarders drain the full queue, then the appliers the full topic")
		err = s.measured(ctx)
	} else {
		err = s.scenario(ctx)
	}
	if err == nil {
		err = s.afterwards(ctx)
	}
	countCtx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		countCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
	}
	s.stopAll()
	res.kinds, res.missedFaults = tally(s.faults)
	res.workerProblems = procProblems(s.procList())
	res.wantRebalance = res.kinds[consumerKill]+res.kinds[scaleOut]+res.kinds[scaleIn] > 0
	if cerr := s.count(countCtx, &res); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return res, err
}

func (s *scaleRun) stopAll() {
	var wg sync.WaitGroup
	for _, p := range s.procList() {
		wg.Go(p.stop)
	}
	wg.Wait()
}

func startAll(procs []*proc) error {
	for _, p := range procs {
		if err := p.start(); err != nil {
			return err
		}
	}
	return nil
}

// scenario runs the messages through the faults.
func (s *scaleRun) scenario(ctx context.Context) error {
	s.planFaults()
	s.began = time.Now()
	base := append(append([]*proc{}, s.forwarders...), s.appliers...)
	if err := startAll(base); err != nil {
		return err
	}
	bg, stopBG := context.WithCancel(ctx)
	s.bg = bg
	defer s.bgWG.Wait()
	defer stopBG()
	s.bgWG.Go(func() { s.watch(bg) })

	if err := s.publish(ctx, newGate(s.faults, int64(len(s.copies)))); err != nil {
		return err
	}
	s.e.logf("published all %d copies", len(s.copies))
	left, err := s.e.drain(ctx, base, s.faults, int64(s.n), s.backlog)
	if err != nil {
		return err
	}
	s.elapsed = time.Since(s.began)
	if !left.empty() {
		return fmt.Errorf("workers did not drain: %+v", left)
	}
	return nil
}

// planFaults lays out the faults along the publishing, which stays at most
// a tenth of the messages ahead of the effects, so that each fault finds
// both stages at work; the outages last while the publishing goes on.
func (s *scaleRun) planFaults() {
	e := s.e
	sigkill := func(p *proc, at float64) *fault {
		return &fault{kind: consumerKill, name: "SIGKILL " + p.name, at: at, do: p.kill}
	}
	moves := func(name string, at float64) *fault {
		return &fault{kind: leaderMoves, name: name, at: at, do: s.moveLeaders, meanwhile: true}
	}
	// The outages and the leader moves last seconds while the publishing
	// goes on: the next fault comes a quarter of the copies later.
	s.faults = []*fault{
		sigkill(s.forwarders[0], 0.08),
		moves("move the partition leaders (1)", 0.12),
		sigkill(s.appliers[0], 0.20),
		{kind: nodeStop, name: "stop and start the RabbitMQ node leading the queue", at: 0.25, do: s.nodeOutage, meanwhile: true},
		{kind: scaleOut, name: "start " + s.extra.name, at: 0.50, do: func(context.Context) error {
			if err := s.extra.start(); err != nil {
				return err
			}
			e.logf("fault: scaled out: %s joins the group", s.extra.name)
			return nil
		}},
		{kind: primaryKill, name: "SIGKILL a Redis Cluster primary", at: 0.55, do: s.killPrimary, meanwhile: true},
		sigkill(s.appliers[len(s.appliers)-1], 0.75),
		moves("move the partition leaders (2)", 0.80),
		sigkill(s.forwarders[len(s.forwarders)-1], 0.85),
		{kind: scaleIn, name: "stop " + s.extra.name, at: 0.92, do: func(context.Context) error {
			s.extra.stop()
			e.logf("fault: scaled in: %s stopped", s.extra.name)
			return nil
		}},
	}
	if e.opt.forget {
		f := &fault{kind: forgetKind, name: "delete the run's Redis records", at: 0.50, do: s.forget}
		s.faults = append(s.faults[:4], append([]*fault{f}, s.faults[4:]...)...)
	}
}

// forget deletes every record the Redis store holds for the run, as a
// failover that lost all of them would (-forget): the copies still to come
// of messages completed before are processed again, which the run must
// count.
func (s *scaleRun) forget(ctx context.Context) error {
	n, err := s.redis.deleteKeys(ctx, s.tables.redisPrefix())
	s.forgotten.Add(n)
	if err != nil {
		return err
	}
	s.e.logf("sabotage: deleted the run's %d Redis records (-forget)", n)
	return nil
}

// nodeOutage stops the RabbitMQ node that leads the queue while the
// forwarders and the publisher use it, keeps it down for 5 s, and starts it
// again.
func (s *scaleRun) nodeOutage(ctx context.Context) error {
	i, err := s.rabbit.leader(ctx, s.queue)
	if err != nil {
		return err
	}
	began := time.Now()
	if err := s.rabbit.stopNode(ctx, i); err != nil {
		return err
	}
	from, applied := s.forwarded.Load(), s.applied.Load()
	s.e.logf("fault: RabbitMQ node %s (leader of the queue) stopped in %v", s.rabbit.nodes[i], time.Since(began).Round(time.Millisecond))
	sleep(ctx, 5*time.Second)
	down := time.Since(began)
	// Started again even when ctx ended: the setup must be put back.
	if err := s.rabbit.startNode(context.WithoutCancel(ctx), i); err != nil {
		return err
	}
	s.e.logf("fault: RabbitMQ node %s started again after %v down (meanwhile %d derived records, %d effects); running after %v",
		s.rabbit.nodes[i], down.Round(time.Millisecond), s.forwarded.Load()-from, s.applied.Load()-applied, time.Since(began).Round(time.Millisecond))
	return nil
}

// killPrimary kills a Redis Cluster primary with SIGKILL, waits for its
// replica's promotion, and starts the killed server again (it comes back
// as the new primary's replica), with scripts/clusters.sh.
func (s *scaleRun) killPrimary(ctx context.Context) error {
	began := time.Now()
	old, promoted, err := s.redis.killPrimary(ctx, int(s.e.opt.seed))
	if err != nil {
		if old != "" {
			_ = s.e.clusters(context.WithoutCancel(ctx), "start", "redis-cluster")
		}
		return err
	}
	s.e.logf("fault: Redis Cluster primary %s killed with SIGKILL; %s promoted after %v", old, promoted, time.Since(began).Round(time.Millisecond))
	if err := s.e.clusters(context.WithoutCancel(ctx), "start", "redis-cluster"); err != nil {
		return err
	}
	s.e.logf("fault: %s is back as a replica; the cluster is healthy after %v", old, time.Since(began).Round(time.Millisecond))
	// With WithReplicaAcks, completions on the promoted primary's keys wait
	// until its new replica has caught up: report when they can succeed
	// again, and (meanwhile, without holding the publishing) when the
	// forwarders forward again.
	for time.Since(began) < time.Minute {
		if ok, err := s.redis.replicated(ctx, promoted, s.tables.redisPrefix()); ok && err == nil {
			s.e.logf("fault: writes to %s are replicated again %v after the kill", promoted, time.Since(began).Round(100*time.Millisecond))
			break
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return nil
		}
	}
	s.bgWG.Go(func() {
		from := s.forwarded.Load()
		for s.forwarded.Load() < from+50 {
			if !sleep(s.bg, 50*time.Millisecond) {
				return // nothing left to forward
			}
		}
		s.e.logf("fault: forwarders forwarding again %v after the kill", time.Since(began).Round(100*time.Millisecond))
	})
	return nil
}

// moveLeaders moves the leader of every partition of the topic to the next
// broker, six times, 300 ms apart.
func (s *scaleRun) moveLeaders(ctx context.Context) error {
	leaders, err := s.leaders(ctx)
	if err != nil {
		return err
	}
	from := s.moves.Load()
	for round := 1; round <= 6; round++ {
		if !sleep(ctx, 300*time.Millisecond) {
			return ctx.Err()
		}
		for p := range scalePartitions {
			leaders[p] = (leaders[p] + 1) % scaleBrokers
			if err := s.kafka.broker.MoveLeader(s.topic, p, leaders[p]); err != nil {
				return err
			}
			s.moves.Add(1)
		}
	}
	s.e.logf("fault: %d partition leader moves", s.moves.Load()-from)
	return nil
}

// leaders returns the broker (its index in Brokers) that leads each
// partition of the topic.
func (s *scaleRun) leaders(ctx context.Context) ([]int, error) {
	addrs := s.kafka.broker.Brokers()
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(addrs...), Timeout: 5 * time.Second, Transport: tr}
	md, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{s.topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka metadata: %w", err)
	}
	leaders := make([]int, scalePartitions)
	for _, t := range md.Topics {
		if t.Name != s.topic {
			continue
		}
		if len(t.Partitions) != scalePartitions {
			return nil, fmt.Errorf("kafka metadata: %d partitions of %s", len(t.Partitions), s.topic)
		}
		for _, p := range t.Partitions {
			at := slices.Index(addrs, net.JoinHostPort(p.Leader.Host, strconv.Itoa(p.Leader.Port)))
			if at < 0 || p.ID < 0 || p.ID >= scalePartitions {
				return nil, fmt.Errorf("kafka metadata: partition %d led by %s:%d, not one of %v", p.ID, p.Leader.Host, p.Leader.Port, addrs)
			}
			leaders[p.ID] = at
		}
		return leaders, nil
	}
	return nil, fmt.Errorf("kafka metadata: no topic %s", s.topic)
}

// publish sends every copy to the queue from several goroutines, in
// chunks. With a gate (the faults), it injects the faults as it goes,
// holds back the chunks past a fault's threshold until the fault was
// injected, and stays at most a tenth of the messages ahead of the
// effects; without one, it publishes as fast as it can.
func (s *scaleRun) publish(ctx context.Context, g *gate) error {
	const chunk, publishers = 50, 4
	total := int64(len(s.copies))
	perMsg := float64(total) / float64(s.n)
	window := float64(max(200, s.n/10))
	pubCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if g != nil {
		var faultsWG sync.WaitGroup
		faultsWG.Go(func() { g.run(pubCtx, s.e, s.claimed.Load) })
		defer faultsWG.Wait()
	}
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				end := s.claimed.Add(chunk)
				start := end - chunk
				if start >= total {
					return
				}
				end = min(end, total)
				if g != nil {
					if !g.wait(pubCtx, start) {
						return
					}
					for float64(start)/perMsg > float64(s.applied.Load())+window {
						if !sleep(pubCtx, 10*time.Millisecond) {
							return
						}
					}
				}
				msgs := make([]publisher.Message, 0, end-start)
				for _, i := range s.copies[start:end] {
					msgs = append(msgs, s.msgs[i].msg)
				}
				if err := s.pub.PublishBatch(pubCtx, msgs...); err != nil {
					errs <- fmt.Errorf("publish to RabbitMQ: %w", err)
					cancel()
					return
				}
				s.published.Add(end - start)
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

// watch refreshes the progress counters and logs them every 5 s.
func (s *scaleRun) watch(ctx context.Context) {
	tick := time.Now()
	for sleep(ctx, 250*time.Millisecond) {
		if size, err := s.kafka.broker.TopicSize(ctx, s.topic); err == nil {
			s.forwarded.Store(int64(size))
		}
		if n, err := s.appliedNow(ctx); err == nil {
			s.applied.Store(n)
		}
		if time.Since(tick) >= 5*time.Second {
			tick = time.Now()
			var failures int64
			_ = s.e.pool.QueryRow(ctx, "SELECT count(*) FROM "+s.tables.faults()+" WHERE kind <> 'drop'").Scan(&failures)
			s.e.logf("published %d/%d copies, derived records %d, effects %d/%d, handler failures so far %d",
				s.published.Load(), len(s.copies), s.forwarded.Load(), s.applied.Load(), s.n, failures)
		}
	}
}

// appliedNow counts the distinct messages with an effect and those dropped
// on purpose.
func (s *scaleRun) appliedNow(ctx context.Context) (int64, error) {
	var n int64
	err := s.e.pool.QueryRow(ctx, "SELECT (SELECT count(DISTINCT message_id) FROM "+s.tables.effects()+
		") + (SELECT count(DISTINCT message_id) FROM "+s.tables.faults()+" WHERE kind = 'drop')").Scan(&n)
	return n, err
}

func (s *scaleRun) rows(ctx context.Context) (int64, error) {
	var n int64
	err := s.e.pool.QueryRow(ctx, "SELECT count(*) FROM "+s.tables.effects()).Scan(&n)
	return n, err
}

// forwardedNow counts the distinct originals the forwarders completed.
func (s *scaleRun) forwardedNow(ctx context.Context) (int64, error) {
	var n int64
	err := s.e.pool.QueryRow(ctx, "SELECT count(DISTINCT message_id) FROM "+s.tables.forwarded()+" WHERE result = 'processed'").Scan(&n)
	return n, err
}

// backlog reads what the workers still have to do.
func (s *scaleRun) backlog(ctx context.Context) (backlog, error) {
	var b backlog
	var err error
	if b.applied, err = s.appliedNow(ctx); err != nil {
		return b, err
	}
	if b.queue, err = s.rabbit.queueLength(s.queue); err != nil {
		return b, err
	}
	if b.lag, _, err = s.kafka.lag(ctx, s.topic, s.group); err != nil {
		return b, err
	}
	return b, nil
}

// measured runs the stages one after the other without faults, to measure
// each transport's throughput: all copies are published first, then the
// forwarders drain the queue alone, then the appliers the topic.
func (s *scaleRun) measured(ctx context.Context) error {
	e := s.e
	s.began = time.Now()
	began := time.Now()
	if err := s.publish(ctx, nil); err != nil {
		return err
	}
	d := time.Since(began)
	s.publishRate = float64(len(s.copies)) / d.Seconds()
	e.logf("published %d copies in %v", len(s.copies), d.Round(time.Millisecond))

	began = time.Now()
	if err := startAll(s.forwarders); err != nil {
		return err
	}
	if err := s.waitFor(ctx, "the forwarders", func(ctx context.Context) (bool, error) {
		n, err := s.forwardedNow(ctx)
		if err != nil || n < int64(s.n) {
			return false, err
		}
		q, err := s.rabbit.queueLength(s.queue)
		return q == 0, err
	}); err != nil {
		return err
	}
	d = time.Since(began)
	s.fwdRate, s.fwdCPS = float64(s.n)/d.Seconds(), float64(len(s.copies))/d.Seconds()
	e.logf("forwarders: %d messages (%d copies) in %v", s.n, len(s.copies), d.Round(time.Millisecond))

	began = time.Now()
	if err := startAll(s.appliers); err != nil {
		return err
	}
	if err := s.waitFor(ctx, "the appliers", func(ctx context.Context) (bool, error) {
		n, err := s.appliedNow(ctx)
		if err != nil || n < int64(s.n) {
			return false, err
		}
		lag, _, err := s.kafka.lag(ctx, s.topic, s.group)
		return lag == 0, err
	}); err != nil {
		return err
	}
	d = time.Since(began)
	s.applyRate = float64(s.n) / d.Seconds()
	s.elapsed = time.Since(s.began)
	e.logf("appliers: %d messages in %v", s.n, d.Round(time.Millisecond))
	s.stopAll()
	return nil
}

// waitFor polls done every 100 ms until it reports true or ctx ends.
func (s *scaleRun) waitFor(ctx context.Context, what string, done func(context.Context) (bool, error)) error {
	for {
		ok, err := done(ctx)
		if ok && err == nil {
			return nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), err)
		}
	}
}

// afterwards checks what the stores remember, with every worker stopped:
// every original is published once more, and the forwarders must answer
// all of them duplicate (the Redis Cluster store kept every completion
// through the primary's kill) without publishing anything; then the
// appliers' group reads the whole topic again, which must add no effect.
func (s *scaleRun) afterwards(ctx context.Context) error {
	e := s.e
	s.stopAll()
	before, err := s.kafka.broker.TopicSize(ctx, s.topic)
	if err != nil {
		return err
	}
	var since time.Time
	if err := e.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&since); err != nil {
		return err
	}
	for i := 0; i < s.n; i += 500 {
		var msgs []publisher.Message
		for _, m := range s.msgs[i:min(i+500, s.n)] {
			msgs = append(msgs, m.msg)
		}
		if err := s.pub.PublishBatch(ctx, msgs...); err != nil {
			return fmt.Errorf("publish again: %w", err)
		}
	}
	e.logf("recheck: every message published once more")
	if err := startAll(s.forwarders); err != nil {
		return err
	}
	answered := func(ctx context.Context) (int64, error) {
		var n int64
		err := e.pool.QueryRow(ctx, "SELECT count(DISTINCT message_id) FROM "+s.tables.forwarded()+" WHERE at >= $1", since).Scan(&n)
		return n, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = s.waitFor(wctx, "the forwarders to answer the messages published again", func(ctx context.Context) (bool, error) {
		n, err := answered(ctx)
		if err != nil || n < int64(s.n) {
			return false, err
		}
		q, err := s.rabbit.queueLength(s.queue)
		return q == 0, err
	})
	cancel()
	s.stopAll()
	if err != nil {
		return err
	}
	after, err := s.kafka.broker.TopicSize(ctx, s.topic)
	if err != nil {
		return err
	}
	s.recheckNew = int64(after - before)
	if s.recheckAnswered, err = answered(ctx); err != nil {
		return err
	}
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM "+s.tables.forwarded()+" WHERE at >= $1 AND result = 'processed'", since).Scan(&s.recheckProcessed); err != nil {
		return err
	}
	e.logf("recheck: %d messages answered, %d processed again, %d derived records added", s.recheckAnswered, s.recheckProcessed, s.recheckNew)
	s.replayed, s.replayNew, err = e.replay(ctx, s.kafka, s.applyConfig(0), s.rows)
	return err
}

// printThroughput writes the scenario's throughput line.
func (s *scaleRun) printThroughput() {
	if s.measure {
		s.e.printf("scale-throughput: processes=%d published=%.0f/s forwarded=%.0f/s (copies %.0f/s) applied=%.0f/s\n",
			s.procs, s.publishRate, s.fwdRate, s.fwdCPS, s.applyRate)
		return
	}
	rate := 0.0
	if s.elapsed > 0 {
		rate = float64(s.n) / s.elapsed.Seconds()
	}
	s.e.printf("scale-throughput: processes=%d end_to_end=%.0f/s in %v (faults included)\n", s.procs, rate, s.elapsed.Round(time.Second))
}

// count reads the effects and the forwarders' records and compares them
// with the messages sent.
func (s *scaleRun) count(ctx context.Context, res *scaleResult) error {
	e, t := s.e, s.tables
	byDerived := make(map[uuid.UUID]int, len(s.msgs))
	byID := make(map[uuid.UUID]int, len(s.msgs))
	for i, m := range s.msgs {
		byDerived[m.derived], byID[m.id] = i, i
	}
	rows, err := e.pool.Query(ctx, "SELECT message_id, causation_id, n FROM "+t.effects())
	if err != nil {
		return fmt.Errorf("count effects: %w", err)
	}
	got := make([]int64, s.n)
	for rows.Next() {
		var id, cause uuid.UUID
		var n int64
		if err := rows.Scan(&id, &cause, &n); err != nil {
			rows.Close()
			return fmt.Errorf("count effects: %w", err)
		}
		res.effects++
		i, ok := byDerived[id]
		if !ok {
			res.unexpected++
			continue
		}
		got[i]++
		if cause != s.msgs[i].id || n != int64(i) {
			res.mismatched++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count effects: %w", err)
	}
	for _, g := range got {
		switch {
		case g == 0:
			res.lost++
		case g > 1:
			res.duplicates++
		}
		if g > 0 {
			res.distinct++
		}
	}
	// Stage 1: how each delivery ended, and the originals completed twice.
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE result = 'processed'), count(*) FILTER (WHERE result = 'duplicate') FROM "+t.forwarded()).
		Scan(&res.fwdProcessed, &res.fwdDuplicates); err != nil {
		return fmt.Errorf("count forwarded: %w", err)
	}
	frows, err := e.pool.Query(ctx, "SELECT message_id FROM "+t.forwarded()+" WHERE result = 'processed' GROUP BY message_id HAVING count(*) > 1")
	if err != nil {
		return fmt.Errorf("count forwarded: %w", err)
	}
	for frows.Next() {
		var id uuid.UUID
		if err := frows.Scan(&id); err != nil {
			frows.Close()
			return fmt.Errorf("count forwarded: %w", err)
		}
		res.forwardedTwice++
		if _, ok := byID[id]; !ok {
			res.unexpected++
		}
	}
	frows.Close()
	if err := frows.Err(); err != nil {
		return fmt.Errorf("count forwarded: %w", err)
	}
	// Rebalances: the generations the workers joined, less the first.
	var gens int64
	if err := e.pool.QueryRow(ctx, "SELECT count(DISTINCT generation) FROM "+t.generations()+" WHERE worker > 0").Scan(&gens); err != nil {
		return fmt.Errorf("count generations: %w", err)
	}
	res.rebalances = max(0, gens-1)
	if err := countFaults(ctx, e, t, &res.handlerFailures, &res.panics, &res.dropped); err != nil {
		return err
	}
	res.moves, res.forgotten = s.moves.Load(), s.forgotten.Load()
	res.recheckNew, res.recheckProcessed, res.recheckAnswered = s.recheckNew, s.recheckProcessed, s.recheckAnswered
	res.replayNew, res.replayed = s.replayNew, s.replayed
	if n, err := s.rabbit.queueLength(s.queue); err == nil {
		res.leftInQueue = n
	}
	if n, err := s.rabbit.queueLength(s.queue + consumer.DeadLetterSuffix); err == nil {
		res.deadLetters += n
	}
	if n, err := s.kafka.broker.TopicSize(ctx, s.topic+consumer.DeadLetterSuffix); err == nil {
		res.deadLetters += int64(n)
	}
	res.counted = true
	return nil
}
