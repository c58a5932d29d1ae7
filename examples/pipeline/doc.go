// Command pipeline shows a consumer that publishes derived events surviving a
// crash between publishing and acknowledging: downstream still sees each
// derived event once.
//
//	go run ./examples/pipeline
//
// Orders go into a RabbitMQ queue. A worker consumes them and, for each
// order.placed, publishes an invoice.requested event to Kafka. The consumer
// runs the handler in its standard chain, whose first layer puts the order's
// lineage in the handler's context, so the publisher derives the invoice's
// message ID from the order's message ID (and sets its causation and
// correlation IDs): the same order always yields the same invoice ID, in any
// process.
//
// The worker is this program run again as a child process ("pipeline
// worker ..."). For some orders it kills itself with SIGKILL right after the
// invoice was published and before the order was acknowledged, as a crash
// would. The parent restarts it; RabbitMQ redelivers the unacknowledged order;
// the worker's dedupe claim (in Redis) from the dead process runs out after
// its short lease; the new worker handles the order again and publishes the
// invoice again — with the same ID. The Kafka topic then holds raw duplicates,
// and a downstream consumer deduplicating by message ID
// (consumer.WithDedupe) processes each invoice once. The last line counts it
// all:
//
//	pipeline: inputs=N crashes=C derived_records=N+C derived_unique=N processed_downstream=N ids_differing=0 lost=0
//
// Kafka is in-process unless KAFKA_BROKERS names a cluster; RabbitMQ and Redis
// come from -amqp and -redis (defaults: AMQP_URL, REDIS_URL or local servers).
package main
