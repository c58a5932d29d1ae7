// Package wmforge lets a Watermill (github.com/ThreeDotsLabs/watermill)
// application use UUID-Forge without leaving its router: a deduplicating
// router middleware backed by any dedupe.Store, deterministic IDs for
// Watermill messages, and the mapping between Watermill messages and ours
// that the RabbitMQ and Kafka adapters (packages wmrabbit and wmkafka) use.
//
// It lives in its own module, github.com/uuidforge/uuidforge/contrib/watermill,
// so that Watermill never enters the dependencies of the main module.
//
// # Deduplication in the router
//
// [Deduplicator] claims a message's ID before the handler runs, completes
// the claim only after the handler succeeded and the router acked the
// message, and releases it on failure — Watermill's own
// middleware.Deduplicator marks a message seen before its handler runs, so a
// handler that fails once loses the message, keeps its state in one
// process's memory, and keys on a payload checksum by default:
//
//	store, err := redisstore.New(redisClient) // or dedupe.NewMemory(), pgstore.New(pool), boltstore.Open(path)
//	...
//	dedup, err := wmforge.NewDeduplicator(store) // scope: the handler's name
//	...
//	router.AddMiddleware(dedup.Middleware, middleware.Retry{MaxRetries: 3}.Middleware)
//
// The key is the message's deterministic ID ([MessageID]): metadata
// [MetadataMessageID], else its UUID when it is one, else a content ID of
// its type, key and payload. The scope defaults to the router handler's
// name ([WithScope] to share or fix it): one scope per consumer of a
// stream, never one scope for handlers of different topics (the same ID on
// two topics would then be a duplicate).
//
// With pgstore the handler runs inside the inbox transaction: its writes go
// through pgstore.TxFromContext(msg.Context()) and commit together with the
// completion, so its effects happen once:
//
//	func(msg *message.Message) error {
//		tx, _ := pgstore.TxFromContext(msg.Context())
//		_, err := tx.Exec(msg.Context(), "INSERT INTO invoices (order_id) VALUES ($1)", msg.Metadata.Get(wmforge.MetadataMessageKey))
//		return err
//	}
//
// # Deterministic IDs
//
// [NewMessage] replaces message.NewMessage(watermill.NewUUID(), payload):
// the UUID is derived from the message type and business key (or payload),
// so the same fact published twice has the same UUID, and consumers
// recognise it. In a handler, [NewMessageContext] with the handled
// message's context also derives the ID from the parent's and records the
// correlation and causation IDs.
//
// # Mapping
//
// [PublisherMessage] and [WatermillMessage] convert between Watermill
// messages and ours losslessly: a Watermill UUID that is not the canonical
// form of a UUID (a ULID, an empty UUID) travels in header
// [HeaderWatermillUUID] and comes back as it was; metadata travels as
// headers of the same names; the lineage is the metadata
// [MetadataCorrelationID] and [MetadataCausationID] (and Watermill's
// middleware.CorrelationIDMetadataKey is kept, and set from ours when a
// message has none).
package wmforge
