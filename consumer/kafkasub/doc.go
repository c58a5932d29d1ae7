// Package kafkasub runs a [consumer.Handler] for every record of a Kafka topic in
// a consumer group, with kafka-go's ConsumerGroup and one reader per
// assigned partition.
//
// Each record is fetched, handled, and only then committed, synchronously.
// Records of one partition are handled in order; [WithPartitionParallelism]
// handles several partitions at once. The records a partition's reader has
// already fetched are processed together, as a batch ([WithMaxBatch],
// default 64; a lone record never waits for others): with a store that
// supports it, the batch is claimed in one round trip and completed in one
// round trip (Redis, the memory and bbolt stores, PostgreSQL without the
// inbox) or runs in one transaction with a savepoint per record (the
// PostgreSQL inbox), and its offsets are committed once, after its last
// record is settled.
//
// A failure affects only its own record. A failing record is retried in
// place with backoff — nothing after it in its partition is handled or
// committed meanwhile — and after the configured attempts, or at once for a
// [consumer.Permanent] error or a malformed ID, it is written to the
// dead-letter topic with the reason in [consumer.HeaderDeadLetterReason],
// before any record after it is handled; the commit follows only a
// successful write. A record whose claim is held by another member (a
// rebalance handed it to two members at once) or whose store is down waits
// and is retried, never committed past. On shutdown the records in progress
// finish, no new one starts, and only settled records are committed.
//
//	c, err := kafkasub.New([]string{"localhost:9092"}, "orders", "billing", handle,
//		consumer.WithDedupe(store, "billing"),
//		kafkasub.WithPartitionParallelism(3),
//		kafkasub.WithTLS(tlsConfig), kafkasub.WithSASL(mechanism))
//	if err != nil { ... }
//	if err := c.Ping(ctx); err != nil { ... } // fail fast: cluster unreachable, topic missing
//	err = c.Run(ctx)
//
// [WithStartOffset], [WithSessionTimeout] and [WithDeadLetterTopic] cover
// the usual settings; [WithTLS] and [WithSASL] (a kafka-go sasl.Mechanism,
// from its sasl/plain or sasl/scram packages) connect to a cluster that
// requires them, as managed Kafka services do — every connection the
// consumer makes: the group's, the partition readers', the dead-letter
// writer's and Ping's. Credentials the cluster refuses, or a broker
// certificate the client does not trust, end Run with an error at once
// instead of being retried. [WithReaderConfig] and [WithDeadLetterWriter]
// are validated escape hatches for the rest.
//
// # Rebalances
//
// A record's offset is committed in the group generation the record was
// read in. When the group rebalances, the member stops reading, lets the
// handler calls in progress finish and commit, and only then rejoins; a
// member that takes longer than the rebalance timeout loses its partitions,
// and the coordinator then refuses its late commits (logged at WARN). A
// member therefore never commits a partition it no longer owns, and the
// group's committed offset never moves back. The record of a refused commit
// is delivered again to the partition's new owner, where dedupe answers
// duplicate.
//
// Replaying a topic from an earlier offset is safe as long as the dedupe
// store still remembers the completed IDs: use a retention longer than any
// replay window, or [dedupe.Forever] with the PostgreSQL store
// ([consumer.WithRetention]).
//
// # Dead letters
//
// A dead letter is a record of the dead-letter topic (default: the topic
// followed by [consumer.DeadLetterSuffix]) with the original record's key,
// body and headers, and these headers added:
//
//	x-dead-letter-reason    why ([consumer.Reason]: at most 4096 bytes of UTF-8)
//	x-original-topic        the topic the record was read from
//	x-original-partition    its partition (decimal)
//	x-original-offset       its offset (decimal)
//	x-attempts              how often the handler ran (decimal)
//
// The default dead-letter writer compresses (gzip), so a large record that
// compresses well still fits. When the broker refuses a dead letter as too
// large (a record close to the broker's message.max.bytes, plus the added
// headers), a reference dead letter is written instead: the same headers
// and key without the body, and [consumer.HeaderDeadLetterOmitted] "body"; if even
// that is too large (huge headers or key), a minimal reference with only
// the ID headers (message-id, correlation-id, causation-id, message-type,
// each cut to 1024 bytes), no key, and "body,key,headers". The original
// stays in its topic at x-original-partition and x-original-offset, until
// the topic's retention removes it: a tool that replays dead letters reads
// it from there. Each fallback is logged at ERROR. [ParseDeadLetter] reads
// a dead letter back into the original's location, headers and reason.
//
// A dead letter that cannot be written for another reason (the dead-letter
// topic's cluster unreachable, writes not authorized) is retried with the
// consumer's backoff for as long as it fails; the record is not committed
// without its dead letter, so its partition — with a parallelism of 1, the
// whole consumer — waits. The operator sees an ERROR line "kafkasub: dead
// letter not written; retrying ..." with the topic, partition, offset,
// message ID and cause at the first failure and then once a minute, and an
// INFO line when it is finally written; on shutdown the record is handed
// back uncommitted.
//
// IDs come from the "message-id", "correlation-id" and "causation-id"
// headers, the type from "message-type" and the business key
// ([consumer.Message.Key]) is the record key; see [consumer.Identify] for
// missing and malformed IDs.
package kafkasub
