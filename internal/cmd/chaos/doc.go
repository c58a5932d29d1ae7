// Command chaos is the fault test: it proves that every message has its effect
// exactly once while the system around it breaks.
//
//	go run ./internal/cmd/chaos -n 20000 -orders 5000     # make chaos adds -restart-postgres
//	go run ./internal/cmd/chaos -n 0 -orders 0 -scale 20000 -procs 3   # make chaos-scale
//
// It runs up to three scenarios, one after the other: the message and
// outbox scenarios on this machine's RabbitMQ and PostgreSQL and an
// in-process Kafka broker it starts itself, the scale scenario on the
// clustered setups of scripts/clusters.sh.
//
// # The message scenario (-n)
//
// It sends n distinct messages, half through RabbitMQ and half through Kafka
// (message i goes to RabbitMQ when i is even), into a consumer whose handler
// writes one row per message to PostgreSQL inside the dedupe store's
// transactional inbox (dedupe/pgstore). The effects table deliberately has no
// unique constraint, so a message applied twice shows up as two rows. While the
// messages flow, the program itself injects:
//
//   - every message published twice and a quarter of them three times, through
//     the publisher (same ID every time), in a seeded random order;
//   - transient handler failures (20 % of attempts by default, a quarter of them
//     panics), decided from the seed, the message ID and the attempt, after the
//     row was written, so the inbox must roll the row back;
//   - the broker closing every RabbitMQ connection of the run's own user
//     (rabbitmqctl close_all_user_connections), while publishing and consuming;
//   - the consumer process killed with SIGKILL and started again, twice: the
//     program runs itself as the consumer ("chaos worker", a hidden
//     sub-command);
//   - the in-process Kafka broker stopped and started again on the same port
//     with its data directory kept, while publishing and while consuming;
//   - at the end, the consumer group's offsets reset to the start and the
//     whole Kafka topic consumed again through the same handler.
//
// It then counts the rows and prints
//
//	chaos: messages=N effects=E duplicates=D lost=L faults=F
//
// where N is the number of distinct messages sent over both transports,
// E the number of rows, D the number of messages with more than one row, L the
// number of messages with no row and F the number of faults injected (extra
// copies, handler failures, connection kills, process kills and broker
// restarts), after a "checks:" and a "faults:" line with the details.
//
// # The outbox scenario (-orders)
//
// The full path of a service, through the transactional outbox
// (outbox/pgoutbox): a writer inserts the orders, each with order.placed
// enqueued in the same transaction; relay processes (-relays, 2 by default)
// publish them to a RabbitMQ queue; a billing process consumes them through
// the inbox and, in the inbox's transaction, writes a charge and enqueues
// payment.captured; the relays publish that to a Kafka topic; a receipts
// process consumes it through the inbox and writes a receipt. Charges and
// receipts have no unique constraint. While the orders flow, it injects the
// handler failures (in both consumers, after their writes and, for billing,
// after the enqueue, which must roll back with them), RabbitMQ connection
// kills (the relays' and the billing process's), SIGKILLs of the billing and
// receipts processes and of the relays (three), two Kafka broker restarts, a
// fifth of the dispatched outbox records made pending again (as a database
// crash that forgot the relays' last outcomes would leave them: they are
// published again with the same IDs) and, with -restart-postgres CMD, a
// restart of the PostgreSQL server under every process (the writer retries
// its failed transactions). At the end the receipts group reads the whole
// topic again. It prints
//
//	chaos-outbox: orders=N events=V effects=R duplicates=D lost=L faults=F
//
// where N is the number of orders, V the number of payment.captured events in
// the outbox, R the number of receipts, D the number of orders charged or
// receipted more than once, L the number of orders without a receipt and F the
// number of faults injected, after "outbox-checks:" and "outbox-faults:" lines.
// Each charge and receipt is checked against its order: same order, same
// amount, and the message IDs the order's messages must have (receipts also
// their causation: the order.placed ID).
//
// # The scale scenario (-scale)
//
// Consumers scaled out over clustered servers, with both shared dedupe
// stores, in two stages:
//
//  1. the n messages, each published two or three times (same ID), go to a
//     RabbitMQ quorum queue with a member on each node of the 3-node cluster;
//     -procs forwarder processes (default 3) compete for it, each starting
//     on another node and failing over to the others (rabbitsub
//     WithFailoverURLs, the queue declared by WithTopology); they
//     deduplicate with the Redis Cluster store (redisstore, with
//     WithReplicaAcks(1, 1s)) and, for each message, publish a derived
//     message to Kafka, whose ID derives from the message's ID;
//  2. -procs applier processes, one consumer group, read the derived
//     messages from a topic of six partitions on an in-process Kafka cluster
//     of three brokers, and write one effect row each in the PostgreSQL
//     inbox's transaction (no unique key).
//
// Why this checks both stores. The Redis store is not transactional with
// the handler: a forwarder that dies between its publish and its
// completion publishes again when the message comes back, so stage 1 alone
// can promise only that a message is forwarded at least once and completed
// at most once. The derived message's ID is deterministic, so a second
// publish is a copy of the first, and stage 2's inbox applies each derived
// message once: effects=N with duplicates=0 and lost=0 then means every
// message had exactly one effect end to end, whatever stage 1 repeated.
// Since the inbox would hide a Redis store that forgets completions, stage
// 1 is checked on its own: every forwarder records each delivery it settled
// as processed (the handler succeeded and the store reported the
// completion, replicated) or duplicate, and a message processed twice
// (forwarded_twice) means a completion the store reported was lost; after
// the run every message is published once more, and the forwarders must
// answer all of them duplicate without publishing anything
// (recheck_forwarded=0). A forwarder killed with SIGKILL loses its last
// 50 ms of records, so these checks can miss a repeated completion then,
// never invent one. At the end the appliers' group reads the whole topic
// again, which must add no effect.
//
// While the messages flow it injects, spread over the publishing (which
// stays at most a tenth of the messages ahead of the effects, so that every
// fault finds both stages at work): handler failures in both stages (after
// the forwarder's publish and the applier's write); two forwarders and two
// appliers killed with SIGKILL and started again (the group rebalances); an
// extra applier started and, later, stopped (scale out and in); the
// RabbitMQ node leading the queue stopped and, 5 s later, started again
// (rabbitmqctl stop_app / start_app) while the publisher and the
// forwarders use it; a Redis Cluster primary killed with SIGKILL, its
// replica promoted, and the killed server started again as the new
// primary's replica (scripts/clusters.sh); every partition leader moved to
// another broker, six times in a row, twice. It prints
//
//	chaos-scale: processes=P messages=N effects=E duplicates=D lost=L rebalances=R faults=F
//
// where P is -procs (forwarders, and appliers), R the number of
// consumer-group generations the appliers joined after the first (kafka-go
// logs each join; every member that joins or leaves makes one, the first
// members included), and the rest as in the message scenario, after
// "scale-throughput:", "scale-checks:" and "scale-faults:" lines. It
// fails, besides the counts of the other scenarios, when a message was
// completed twice by the forwarders, forwarded again after the run, left
// in a queue or dead-lettered, and when the appliers' membership changed
// but no rebalance was seen.
//
// The clustered setups must be the local ones (the variables of
// internal/testenv unset), since the scenario puts them back with
// scripts/clusters.sh (-clusters). Before it starts it takes the setups'
// locks exclusively (testenv.HoldSetup): it waits until no test uses the
// Redis Cluster or the RabbitMQ cluster, and no test starts using them
// until it is done.
//
// -measure runs the scenario without faults or handler failures, the
// stages one after the other, to measure each transport's throughput: all
// copies are published first, then the forwarders drain the queue, then
// the appliers the topic; "scale-throughput:" gives the rates.
// -cpuprofile DIR makes every worker process (and the coordinator, where
// the in-process Kafka brokers run) write a CPU profile.
//
// # Exit status
//
// It exits with status 1 when a count is off: effects, events or receipts
// not equal to the messages or orders, a message completed twice by the
// scale scenario's forwarders, a duplicate, a lost message, a row for
// something never sent or that does not match its order, an effect the replay
// added, a message left in a queue, an outbox record pending or dead at the
// end, a worker process that crashed or a planned fault that did not happen;
// with status 2 when it could not set up.
//
// # Showing that the checks work
//
// -no-dedupe consumes without the dedupe middleware: every message and every
// order is then applied more than once and the run fails. -drop-share S makes
// the last handler of each scenario acknowledge a seeded share S of the
// messages without their effect (a handler bug), recording each in the
// faults table: the run must count exactly those as lost, and fail.
// -forget deletes the scale scenario's Redis records halfway, as a failover
// that lost them would: the inbox still applies each message once, and only
// the forwarders' checks (forwarded_twice, recheck_forwarded) can see it,
// and must.
//
// # Worker processes
//
// The coordinator starts the consumers and relays as "chaos worker -role R"
// (R: messages, billing, receipts, relay, forward, apply), passing the
// service URLs in the environment, never on the command line. Every run uses its own queues,
// topics, consumer groups, broker user, tables and Redis keys, and removes
// them at the end (-keep leaves the tables for inspection).
package main
