// Command forge computes deterministic UUIDs from the command line, with the
// same rules and configuration as the forge package, and looks into and
// corrects the deduplication stores (forge dedupe).
//
// Usage:
//
//	forge id [--namespace NS] [--secret-env VAR] [--scheme S] [--prefix P] [--sep S] [--json] PART...
//	forge new-secret
//	forge extract [--sep S] ID
//	forge info [--namespace NS] [--secret-env VAR] [--scheme S]
//	forge dedupe get [STORE] [--json] [--timeout D] SCOPE ID
//	forge dedupe forget [STORE] [--force] [--json] [--timeout D] SCOPE ID
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
package main
