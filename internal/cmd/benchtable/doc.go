// Command benchtable reads `go test -bench` output on standard input and
// prints one table comparing UUID-Forge with its baselines: forge against
// uuid.NewSHA1, the publishers against raw amqp091-go and kafka-go, the
// consumers with and without dedupe, the RabbitMQ consumer with each store
// against the raw amqp091-go consumer, and the dedupe middleware against
// Watermill's Deduplicator. `make bench` pipes every benchmark into it.
//
// Throughput is the benchmark's msgs/s or pairs/s metric when it reports one,
// otherwise 1e9 / ns/op. Repeated runs (-count) are summarised by the median.
package main
