// Command replay reads a Kafka topic from offset 0 twice, against a durable
// dedupe store, and shows that the second pass processes only the events added
// since the first.
//
//	go run ./examples/replay                  # the bbolt file store
//	go run ./examples/replay -store postgres  # the PostgreSQL store
//
// Run 1 publishes payments, then a consumer group reads the topic from the
// earliest offset and processes every payment. More payments are published.
// Run 2 reopens the store, as a restarted service would, and a new consumer
// group replays the whole topic from the earliest offset (a new group, because
// the old group's committed offsets would skip what it already read — a replay
// is exactly the case where offsets cannot help). The store remembers every
// message ID it completed (consumer.WithRetention(dedupe.Forever)), so run 2
// skips the old payments and processes only the new ones.
//
// The Kafka broker is in-process unless KAFKA_BROKERS names a cluster; the
// PostgreSQL URL comes from -postgres, defaulting to POSTGRES_URL or a local
// server. Each program run starts with an empty store: a new bbolt file in a
// temporary directory (or -bolt PATH), or a freshly created PostgreSQL table
// (-table).
package main
