// Command quickstart shows the whole idea of UUID-Forge in one run, with no
// set-up: orders get IDs from their business data, a producer retry and a
// replay of the topic deliver some of them again, and the idempotent consumer
// charges every order exactly once.
//
//	go run ./examples/quickstart
//
// It starts an in-process Kafka broker (or uses the cluster named by
// KAFKA_BROKERS), publishes the orders with publisher/kafkapub, publishes some of
// them a second time as a producer retry would, consumes the topic with
// consumer/kafkasub deduplicating over the in-memory store
// (consumer.WithDedupe), then replays the whole topic from offset 0 with a
// new consumer group sharing the same store. The last line sums it up:
//
//	summary: published=P unique=U processed=U duplicates_skipped=D lost=0
//
// published counts the records written to the topic (retries included),
// unique the distinct message IDs among them, processed the orders the
// handler charged, duplicates_skipped the deliveries (first pass and replay)
// that the dedupe layer acknowledged without calling the handler (counted by
// a consumer.Observer), and lost the orders that were published but never
// charged. Every number is counted while the program runs.
package main
