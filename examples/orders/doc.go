// Command orders is the multi-storage scenario: one order, placed through
// RabbitMQ, is written by its consumer to PostgreSQL, to a Redis cache entry
// and to a file, each under IDs that anybody can compute again from the
// business data alone. A consistency check then does exactly that and looks the
// order up in all three stores.
//
//	go run ./examples/orders
//
// The IDs:
//
//	user    = forge.New("users.<namespace>").ID(email)
//	product = forge.New("products.<namespace>").ID(sku)
//	order   = forge.New("orders.<namespace>").ID(email, order number)
//
// Nothing else goes into an ID — in particular no timestamp: an ID derived from
// the time the order was processed would be different on every retry and could
// never be recomputed by the check.
//
// The consumer runs the handler in PostgreSQL's transactional inbox
// (dedupe/pgstore): the order rows and the dedupe record commit together.
// The Redis entry (order:<id>) and the file (<dir>/ab/cd/<id>.json) are
// written before that commit under names made from the ID, so a retry rewrites
// the same bytes in the same place.
//
// Each run starts from empty stores: it recreates its own PostgreSQL schema
// (flag -schema, which holds the orders, order_items and dedupe tables) and
// writes its files to a new temporary directory unless -dir says otherwise.
// Service URLs come from flags, defaulting to AMQP_URL, REDIS_URL and
// POSTGRES_URL or to local servers.
package main
