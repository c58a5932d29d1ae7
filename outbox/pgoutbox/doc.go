// Package pgoutbox is the transactional outbox in PostgreSQL: a
// [Publisher] that writes messages into a table inside the caller's
// transaction, and the [Store] an [outbox.Relay] takes them from to publish
// them after the commit. A message exists in the outbox if and only if the
// transaction that wrote it committed, and the relay publishes every
// message that exists, however often processes crash in between.
//
// # Enqueue in the caller's transaction
//
// An HTTP handler inserts an order and enqueues order.placed in one
// transaction:
//
//	store, err := pgoutbox.New(pool)          // once; store.Migrate(ctx) creates the table
//	orders, err := pgoutbox.NewPublisher(store, "orders", gen)
//
//	func placeOrder(ctx context.Context, o Order) error {
//		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//			if _, err := tx.Exec(ctx, "INSERT INTO orders (id, total) VALUES ($1, $2)", o.ID, o.Total); err != nil {
//				return err
//			}
//			return orders.Publish(pgoutbox.NewContext(ctx, tx), publisher.Message{
//				Type: "order.placed", Key: []any{o.ID}, Body: o.JSON(),
//			})
//		})
//	}
//
// The message is stamped at once, exactly as a broker publisher stamps it
// ([publisher.Stamp]), so the ID stored is the ID consumers see; a retried
// request that enqueues the same message again stores nothing (the table
// is unique on destination and message ID).
//
// Without a transaction in the context, Publish fails with
// [ErrNoTransaction] — a forgotten NewContext would otherwise publish a
// message whose transaction may roll back — unless the publisher was made
// with [WithOwnTransaction].
//
// # Inside the inbox
//
// A handler run by the PostgreSQL inbox (dedupe/pgstore, through
// consumer.WithDedupe) needs nothing more: the inbox's transaction is in its
// context ([TxFromContext] finds it), so the messages it publishes through
// a pgoutbox [Publisher] are stored in that transaction, with the handled
// message as their parent (causation), and exist if and only if the
// handler's writes and the message's completion commit. The handler takes a
// [publisher.Publisher]; giving it a broker publisher or an outbox
// publisher is configuration:
//
//	var pub publisher.Publisher = rabbitPub          // direct
//	pub, err = pgoutbox.NewPublisher(store, "billing", gen) // through the outbox
//	h, err := consumer.NewHandler(billing{pub: pub}, consumer.WithDedupe(inbox, "billing"))
//
// # The relay
//
// One or more processes run a relay, with one broker publisher per
// destination:
//
//	relay, err := outbox.NewRelay(store, map[string]publisher.Publisher{
//		"orders":  rabbitPub,  // rabbitpub.New(url, gen, rabbitpub.WithExchange("orders"))
//		"billing": kafkaPub,   // kafkapub.New(brokers, "billing", gen)
//	})
//	err = relay.Run(ctx)
//
// Each enqueue that stores a record notifies the table's channel
// ([Store.Channel]) with pg_notify at its commit; relays LISTEN on a
// connection of their own and claim the new records within milliseconds,
// and poll as a fallback ([WithoutNotify] turns notifications off).
// A claim ([Store.Claim]) locks the records it takes with FOR UPDATE SKIP
// LOCKED inside a transaction that stays open while the relay publishes
// them and closes when it marks them; relays never wait for each other, and
// the records of a relay that dies are released as soon as its connection
// closes, to be published again with the same IDs.
//
// # Connections and cost
//
// An enqueue is one INSERT (all the messages of a PublishBatch call, with
// the notification) in the caller's transaction. A relay holds a connection
// of its own for LISTEN (made with the pool's settings, outside the pool)
// and, for each worker busy with a batch, one connection of the pool with
// an open transaction, for at most the publish timeout
// (outbox.WithPublishTimeout): size the pool for the relay's workers plus
// the application's own use. A claim is BEGIN and one statement, in one
// round trip; storing the outcome and COMMIT are another. That commit does
// not wait for its WAL to reach the disk (synchronous_commit is off for
// that transaction only): a database crash can forget the last outcomes
// stored, and those records are published again with the same IDs —
// duplicates consumers drop, never a loss, since the transactions that
// enqueued them committed normally.
//
// # Order
//
// Records of one destination with the same key (the business key's wire
// form) are published in Seq order: a record is claimed only when no
// record of its key with a smaller Seq is pending outside its batch (the
// relay then publishes a batch's records of one key one round at a time,
// see [outbox.Relay]). Seq comes from an identity column, assigned when
// the record is inserted, so it is the order of the inserts: for messages of
// one key enqueued one after another — the usual case, since writers of
// one entity are serialised by its row lock — it is their order. Two
// transactions that enqueue for one key at the same time get Seqs in the
// order of their inserts but may commit in the other order; a relay may
// then publish the later Seq first, because the earlier one was not visible
// yet. Serialise the writers of an entity (SELECT ... FOR UPDATE on its row)
// when their order matters. A failed record holds up the later records of
// its key until it succeeds or dies; a dead record does not; a redriven
// record gets a new Seq and goes behind the records enqueued since.
//
// # The table
//
// [DDL] returns the statements [Store.Migrate] runs (idempotent, and safe
// from several processes at once). For the default table:
//
//	CREATE TABLE IF NOT EXISTS "uuidforge_outbox" (
//		seq            bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
//		destination    text        NOT NULL,
//		message_id     uuid        NOT NULL,
//		correlation_id uuid        NOT NULL,
//		causation_id   uuid,
//		type           text        NOT NULL,
//		msg_key        bytea,
//		key_hash       bigint      GENERATED ALWAYS AS (hashtextextended(encode(msg_key, 'hex'), 0)) STORED,
//		routing_key    text,
//		headers        jsonb,
//		body           bytea       NOT NULL,
//		created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
//		state          text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dispatched', 'dead')),
//		due_at         timestamptz DEFAULT clock_timestamp(),
//		attempts       integer     NOT NULL DEFAULT 0,
//		last_error     text,
//		done_at        timestamptz,
//		CHECK (state <> 'pending' OR due_at IS NOT NULL),
//		CONSTRAINT "uuidforge_outbox_message_key" UNIQUE (destination, message_id)
//	);
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_due_idx"
//		ON "uuidforge_outbox" (destination, due_at, seq) WHERE state = 'pending';
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_key_idx"
//		ON "uuidforge_outbox" (destination, key_hash, seq) WHERE state = 'pending' AND key_hash IS NOT NULL;
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_done_idx"
//		ON "uuidforge_outbox" (done_at) WHERE state = 'dispatched';
//	CREATE INDEX IF NOT EXISTS "uuidforge_outbox_dead_idx"
//		ON "uuidforge_outbox" (destination, seq) WHERE state = 'dead';
//
// The columns:
//
//   - seq: enqueue order (see Order);
//   - destination: the name the relay maps to a publisher. The transport,
//     exchange or topic are the publisher's configuration, not the row's,
//     so moving a destination to another broker changes no data;
//   - message_id, correlation_id, causation_id, type: the message's
//     identity, stamped at enqueue (causation_id NULL without a parent);
//   - msg_key: the business key's wire form ([publisher.KeyBytes]: the
//     Kafka record key, the RabbitMQ message-key header), NULL without a
//     key; key_hash, computed by PostgreSQL from it, groups a key's records
//     for ordering (two keys with the same hash are ordered together, which
//     is safe);
//   - routing_key: the RabbitMQ routing key fixed at enqueue (NULL: the
//     relay's publisher computes it, by default from the type);
//   - headers: the application headers as a JSON object of strings (NULL
//     when none);
//   - body: the payload;
//   - created_at: the enqueue time, by the database clock;
//   - state: pending, dispatched or dead ([outbox.State]); due_at: when a
//     pending record is next tried; attempts and last_error: its failed
//     attempts and the last reason (a dead record's reason); done_at: when
//     it was dispatched or died.
//
// Other programs (in any language) may enqueue by inserting destination,
// message_id, correlation_id, causation_id, type, msg_key, routing_key,
// headers and body; the defaults fill in the rest. Notify the channel with
// pg_notify in the same transaction to wake the relays at once.
//
// # Retention and cleanup
//
// A dispatched row is kept for the retention ([WithRetention], default
// [DefaultRetention], 24 hours) — the window in which enqueueing the same
// message again is recognised — and then deleted by [Store.Cleanup] or the
// janitor ([WithJanitor]) in statements of at most [DefaultCleanupBatch]
// rows that skip rows others hold, never in one unbounded DELETE. Pending
// and dead rows are never deleted: nothing leaves the table before the
// broker confirmed it. Dead rows stay until [Store.Redrive] or
// [Store.RedriveAll] makes them pending again, or an operator deletes them.
//
// The relay reads only the partial indexes of pending rows, so the millions
// of dispatched rows a busy outbox keeps for its retention do not slow it
// down: with 10 million dispatched rows and 40 000 pending, a claim of 500
// records executes in 3–5 ms, the backlog query (which reads every pending
// record) in 20–80 ms and a cleanup batch of 1000 rows in 3–6 ms, the
// higher figures on a table of 4.5 GB that PostgreSQL's cache does not
// hold (BenchmarkLargeTable logs the plans). Records dispatched since the
// last VACUUM leave dead entries at the front of the pending index, which
// each claim steps over (20 000 of them added 0.5–0.6 ms), so a busy table
// should be vacuumed often: autovacuum's defaults usually do; lower
// autovacuum_vacuum_scale_factor for the table if not.
//
// # Backlog and dead records
//
// [Store.Backlog] returns, per destination, the number of pending records,
// the enqueue time and age of the oldest and the number of dead ones — what
// an alert on a stuck relay needs. [Store.Dead] lists dead records with
// their reason, [Store.Lookup] finds a record by message ID.
package pgoutbox
