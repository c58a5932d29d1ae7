// Command chaos is the fault test: it proves that every message has its effect
// exactly once while the system around it breaks.
//
//	go run ./internal/cmd/chaos -n 20000     # or: make chaos
//
// It sends n distinct messages, half through RabbitMQ and half through Kafka
// (message i goes to RabbitMQ when i is even), into a consumer whose handler
// writes one row per message to PostgreSQL inside the dedupe store's
// transactional inbox (dedupe/pgstore). The effects table deliberately has no
// unique constraint, so a message applied twice shows up as two rows. While the
// messages flow, the program itself injects, on this machine:
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
// It then counts the rows and prints one line
//
//	chaos: messages=N effects=E duplicates=D lost=L faults=F
//
// where N is the number of distinct messages sent over both transports,
// E the number of rows, D the number of messages with more than one row, L the
// number of messages with no row and F the number of faults injected (extra
// copies, handler failures, connection kills, process kills and broker
// restarts). It exits with status 1 when E != N, D != 0, L != 0, a row belongs
// to no message sent, the replay added a row, a message was left in the queue
// or a planned fault did not happen; with status 2 when it could not set up.
//
// Every run uses its own queue, topic, consumer group, broker user and tables,
// and removes them at the end (-keep leaves the tables for inspection).
package main
