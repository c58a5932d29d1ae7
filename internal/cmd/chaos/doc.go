// Command chaos is the fault test: it proves that every message has its effect
// exactly once while the system around it breaks.
//
//	go run ./internal/cmd/chaos -n 20000 -orders 5000     # make chaos adds -restart-postgres
//
// It runs two scenarios, one after the other, on this machine's RabbitMQ and
// PostgreSQL and an in-process Kafka broker it starts itself.
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
// # Exit status
//
// It exits with status 1 when a count is off: effects, events or receipts
// not equal to the messages or orders, a duplicate, a lost message, a row for
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
//
// # Worker processes
//
// The coordinator starts the consumers and relays as "chaos worker -role R"
// (R: messages, billing, receipts, relay), passing the service URLs in the
// environment, never on the command line. Every run uses its own queues,
// topics, consumer groups, broker user and tables, and removes them at the
// end (-keep leaves the tables for inspection).
package main
