// Command orders is a small shop back end in the shape of a real service:
// an HTTP API, a transactional outbox with its relay, two consumers and
// Prometheus metrics, over PostgreSQL, RabbitMQ, Kafka, Redis and files.
// Every store holds the order under IDs that anybody can compute again from
// the business data alone, and a consistency check does exactly that.
//
//	go run ./examples/orders          # the demo
//	go run ./examples/orders serve    # the service alone, on 127.0.0.1:8080
//
// The flow of one order:
//
//	POST /orders ─┬─ orders, order_items rows ─┐ one PostgreSQL transaction
//	              └─ order.placed (outbox) ────┘
//	relay ── order.placed ──▶ RabbitMQ queue ──▶ billing (PostgreSQL inbox)
//	                  billing: order paid, payments row ─┐ one transaction, with the
//	                           payment.captured (outbox) ┘ message's dedupe record
//	relay ── payment.captured ──▶ Kafka topic ──▶ receipts (Redis dedupe)
//	                  receipts: Redis entry <prefix>order:<id>, file <dir>/ab/cd/<id>.json
//
// The IDs:
//
//	user    = forge.New("users.<namespace>").ID(email)
//	product = forge.New("products.<namespace>").ID(sku)
//	order   = forge.New("orders.<namespace>").ID(email, order number)
//	payment = forge.New("payments.<namespace>").ID(order ID)
//	order.placed     message ID: from its type and key (email, order number)
//	payment.captured message ID: derived from the order.placed message's ID
//
// Nothing else goes into an ID — in particular no timestamp: an ID derived
// from the time of a request would be different on every retry and could
// never be recomputed by the check.
//
// A retried POST (the client timed out, or the service died before
// answering) finds the order under the same ID and stores nothing: one
// order, one order.placed. The event exists if and only if the order's
// transaction committed, and the relay publishes it whenever it runs, so a
// process killed between the commit and the publish loses nothing. A
// message the relay publishes twice (it died after the broker's
// confirmation, before marking the record) has the same ID both times and
// the consumers skip the copy.
//
// GET /metrics serves the OpenTelemetry metrics of package otelforge through
// the OpenTelemetry Prometheus exporter: messages enqueued (messaging.system
// "outbox") and sent to each broker, deliveries consumed, duplicates
// skipped, and the outbox backlog. GET /orders/{id} shows an order and
// whether it is paid.
//
// The demo empties the shop's stores (its PostgreSQL schema, its Redis keys,
// its RabbitMQ queue; the files go to a new temporary directory unless -dir
// is given), starts the service in the process, places three orders over
// HTTP and the first one again, waits until every order is paid and has its
// receipt, publishes one order.placed again as a crashed relay would, then
// checks every store and the metrics. It ends with
//
//	orders: requests=4 orders=3 order_events=3 payments=3 payment_events=3 receipts=3 duplicates_skipped=1 consistent=3 mismatches=0
//
// "orders serve" keeps the stores as they are (creating what is missing)
// and runs until SIGINT or SIGTERM; -addr sets its address and
// -kill-after-commit N kills it with SIGKILL right after the N-th order
// commits, to watch it recover. A message a killed process was handling
// waits until its claim's lease ends (-lease, default 30s) before a new
// process handles it. Service URLs come from the flags, defaulting
// to AMQP_URL, REDIS_URL and POSTGRES_URL or to local servers; Kafka is the
// cluster in KAFKA_BROKERS, or an in-process broker, whose records are lost
// with the process (set KAFKA_BROKERS for a service that restarts). URLs
// are printed with their password replaced by xxxxx.
package main
