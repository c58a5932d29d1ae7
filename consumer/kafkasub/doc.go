// Package kafkasub runs a [consumer.Handler] for every record of a Kafka topic in
// a consumer group, with kafka-go's Reader.
//
// Each record is fetched with FetchMessage, handled, and only then committed
// with a synchronous CommitMessages (never ReadMessage, which commits before
// processing, and never an asynchronous commit interval). Records of one
// partition are handled in order; [WithPartitionParallelism] handles several
// partitions at once. A failing record is retried in place with backoff —
// nothing after it in its partition is committed meanwhile — and after the
// configured attempts, or at once for a [consumer.Permanent] error or a
// malformed ID, it is written to the dead-letter topic with the reason in
// [consumer.HeaderDeadLetterReason]; the commit follows only a successful write. A
// record whose claim is held by another member (a rebalance handed it to two
// members at once) or whose store is down waits and is retried, never
// committed past. On shutdown only processed records are committed.
//
//	c, err := kafkasub.New([]string{"localhost:9092"}, "orders", "billing", handle,
//		consumer.WithDedupe(store, "billing"),
//		kafkasub.WithPartitionParallelism(3))
//	if err != nil { ... }
//	err = c.Run(ctx)
//
// The consumer needs no kafka-go types: [WithStartOffset],
// [WithSessionTimeout] and [WithDeadLetterTopic] cover the usual settings,
// and [WithReaderConfig] and [WithDeadLetterWriter] are validated escape
// hatches for the rest (TLS and SASL through the reader's Dialer).
//
// Replaying a topic from an earlier offset is safe as long as the dedupe
// store still remembers the completed IDs: use a retention longer than any
// replay window, or [dedupe.Forever] with the PostgreSQL store
// ([consumer.WithRetention]). After a rebalance a member may still finish and
// commit a record of a partition it lost; the committed offset can then move
// back, which only causes redeliveries that dedupe answers as duplicates.
//
// IDs come from the "message-id", "correlation-id" and "causation-id"
// headers, the type from "message-type" and the business key
// ([consumer.Message.Key]) is the record key; see [consumer.Identify] for
// missing and malformed IDs.
package kafkasub
