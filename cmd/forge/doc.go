// Command forge computes deterministic UUIDs from the command line, with the
// same rules and configuration as the forge package, looks into and
// corrects the deduplication stores (forge dedupe), and lists, shows and
// redrives dead letters (forge dlq).
//
// Usage:
//
//	forge id [--namespace NS] [--secret-env VAR] [--scheme S] [--prefix P] [--sep S] [--json] PART...
//	forge new-secret
//	forge extract [--sep S] ID
//	forge info [--namespace NS] [--secret-env VAR] [--scheme S]
//	forge dedupe get [STORE] [--json] [--timeout D] SCOPE ID
//	forge dedupe forget [STORE] [--force] [--json] [--timeout D] SCOPE ID
//	forge dlq list    SOURCE [FILTER] [--limit N] [--json] [--timeout D]
//	forge dlq show    SOURCE [--json | --hex | --raw] [--timeout D] MESSAGE-ID
//	forge dlq redrive SOURCE (FILTER | --all) [--limit N] [--dry-run] [--via-exchange] [--json] [--timeout D]
//
// Without flags the configuration comes from UUID_FORGE_NAMESPACE,
// UUID_FORGE_SALT and UUID_FORGE_SCHEME. With --json each PART is one JSON
// value; otherwise each PART is a string. Under the python scheme the first
// PART is the entity type, the namespace follows the Python library's
// load_config_from_env (any value is a domain; unset is the DNS namespace)
// and --json values must be strings, numbers, booleans or null. Put "--"
// before parts that start with "-".
//
// The keyed scheme refuses a secret shorter than 16 bytes (make one with
// forge new-secret); the python scheme uses a salt that short, for
// compatibility, with a warning on stderr. --prefix and --sep must be
// UTF-8, --sep non-empty, and together such that forge extract with the
// same --sep reads the UUID back. Bad input prints a message on stderr that
// names the flag or variable it came from, and exits with status 1 (2 for
// usage errors). Examples:
//
//	forge id --namespace users john@example.com
//	forge id --namespace orders --json '{"sku":"A","qty":2}' 7
//	UUID_FORGE_SALT=$(forge new-secret) forge info --namespace mycompany.com
//	forge extract INV-EUR-6c7bc462-4987-5526-bfae-9c4efe86ec53
//
// forge dedupe operates the deduplication stores of package dedupe (see
// [dedupe.Admin]): get shows a key's record — completed (until when, or
// forever), leased (until when, by which fencing token), released or
// absent — and forget deletes it so that the next delivery of the message
// is processed again. forget refuses a lease that has not ended unless
// --force: the holder's completion then fails with a lost lease, and the
// message may be processed twice. STORE is --redis URL [--prefix P],
// --postgres URL [--table T] or --bolt PATH [--bucket B] (a file no other
// process has open); without one, REDIS_URL or POSTGRES_URL, whichever is
// set. URLs are printed with their passwords masked, and a URL that does
// not parse is not printed. --json prints one JSON object. Exit status: 0
// the key has a record (get) or was forgotten (forget), 3 it has none, 1 an
// error or a refused forget, 2 a usage error. Examples:
//
//	forge dedupe get --redis redis://127.0.0.1:6379/0 billing 6c7bc462-4987-5526-bfae-9c4efe86ec53
//	POSTGRES_URL=postgres://app@db/app forge dedupe forget billing 6c7bc462-4987-5526-bfae-9c4efe86ec53
//	forge dedupe get --json --bolt /var/lib/billing/dedupe.db billing 6c7bc462-4987-5526-bfae-9c4efe86ec53
//
// forge dlq operates the dead letters of packages rabbitsub and kafkasub.
// SOURCE is --queue NAME [--amqp URL] (a RabbitMQ dead-letter queue; URL
// default $AMQP_URL) or --topic NAME [--kafka BROKERS] (a Kafka dead-letter
// topic; BROKERS host:port,..., default $KAFKA_BROKERS); NAME is the
// dead-letter queue or topic, or the one it serves, whose NAME.dead-letter
// is then read. FILTER is any of --id ID (repeatable), --reason TEXT
// (substring), --reason-regexp RE and, on Kafka, --from-offset P:O,...
//
// A Kafka cluster that requires TLS or SASL, as managed Kafka services do,
// takes: --kafka-tls (TLS trusting the system's CAs), --kafka-ca FILE (the
// CA certificates of a PEM file instead; implies TLS), --kafka-cert FILE
// and --kafka-key FILE together (a client certificate and its key, PEM;
// implies TLS), and --kafka-sasl MECH (plain, scram-sha-256 or
// scram-sha-512) with --kafka-user NAME. The SASL password is read from
// the environment variable KAFKA_PASSWORD only: there is no flag for it,
// since flags show in ps. It never appears in output or errors. Flags that
// do not go together (--kafka-sasl without --kafka-user or without
// KAFKA_PASSWORD, an unknown mechanism, --kafka-cert without --kafka-key,
// any of them with --queue) are usage errors. A refused password or an
// untrusted broker certificate is an error that says so, at once.
//
// list prints one line per dead letter (or one JSON object per line with
// --json): where it is, its message ID, type, attempts, form (plain,
// envelope, broker, reference), original destination and reason. Listing
// consumes nothing. On RabbitMQ the queue is read with basic.get without
// acknowledging, and everything read is requeued in order when the command
// ends: a queue that others consume meanwhile may end up reordered, and on
// a quorum queue each read counts as a delivery (a warning says so: a
// delivery limit would drop dead letters read that often). On Kafka the
// topic is read with fetch requests, without a consumer group, from its
// oldest record. The connection to RabbitMQ is guarded as rabbitsub's
// consumer's is ([rabbitsub.Guard]), so a dead letter whose headers the
// AMQP client cannot read is listed like any other. show prints every dead
// letter of one message ID in full: properties, headers, key, and the body
// as text or a hex dump (--hex: all of it); --raw writes the body of the
// only one to stdout. A Kafka reference dead letter's body is read from the
// original topic (list does not read it, so list cannot tell whether it is
// still there).
//
// redrive publishes each matching dead letter's original again, with its
// message, correlation and causation IDs (a message completed meanwhile is
// a duplicate the consumer's deduplication recognises), its properties, key
// and headers, without the dead-letter headers: on RabbitMQ to its original
// queue through the default exchange (or, with --via-exchange, to the
// original exchange and routing key an envelope or broker dead letter
// records), as mandatory and confirmed, and only then is the dead letter
// removed; on Kafka to its original topic and partition, with acks from all
// in-sync replicas and the time of the redrive as the record's timestamp
// (time-based retention counts from then), reading a reference's original
// from its topic (refused once retention removed it). Kafka dead letters stay: redrive prints the
// --from-offset that continues after the last one it handled (or at the
// first it failed to republish). Envelopes give back the original's headers
// and body. A dead letter whose headers the AMQP client cannot read is
// refused, so that the queue is not poisoned again; so is one whose user-id
// property names another user than the connection's. A failed republish
// leaves the dead letter where it is. --dry-run prints what would be
// redriven and changes nothing. Without a filter redrive needs --all.
//
// Exit status: 0 done, 3 no dead letter matched (show, redrive), 1 an error
// or some dead letters not redriven, 2 a usage error. URLs are printed with
// their passwords masked. Examples:
//
//	forge dlq list --queue orders --amqp amqp://ops@rabbit/
//	forge dlq show --raw --queue orders 6c7bc462-4987-5526-bfae-9c4efe86ec53 > body.json
//	forge dlq redrive --dry-run --reason-regexp 'timeout|connection refused' --queue orders
//	KAFKA_BROKERS=kafka:9092 forge dlq redrive --all --topic orders
//	KAFKA_BROKERS=kafka:9092 forge dlq redrive --all --topic orders --from-offset 0:42,1:17
//	KAFKA_PASSWORD=... forge dlq list --topic orders --kafka kafka.example.com:9093 --kafka-tls --kafka-sasl scram-sha-512 --kafka-user ops
package main
