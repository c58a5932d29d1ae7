// Package forge computes deterministic UUIDs from business data, so that
// every process, in any language, derives the same ID for the same entity
// without a central ID service.
//
// A [Generator] is bound to a namespace and a scheme, and is safe for
// concurrent use. [Generator.ID] hashes the canonical name of its parts:
// the RFC 8785 (JCS) serialization of the JSON array of the parts
// ([Canonical]).
//
//	users := forge.MustNew("users")
//	id, err := users.ID("john@example.com")   // one part
//	id, err = invoices.ID("EUR", 12345)        // several parts
//	id, err = orders.ID(order)                 // a struct or map, by its JSON form
//
// Schemes:
//   - [SchemeV5] (default): RFC 9562 UUIDv5(namespace, name);
//   - [SchemeKeyed] (chosen by [WithSecret]): a UUIDv8 from
//     HMAC-SHA256(secret, namespace ‖ name) that nobody without the secret
//     can predict or enumerate;
//   - [SchemePython]: bit-identical to the Python library uuid-forge 0.1.x
//     ([Generator.PythonID], [Kwargs]).
//
// [FromEnv] reads the configuration shared with the Python library
// (UUID_FORGE_NAMESPACE, UUID_FORGE_SALT) plus UUID_FORGE_SCHEME;
// [NewSecret] makes a secret, [Secret] holds one without ever showing it,
// [Fingerprint] names it, and [CheckSecret] tells a weak one (the keyed
// scheme refuses secrets shorter than [MinSecretBytes]). [Prefix] and [Extract] handle human-readable prefixed IDs such as
// "INV-EUR-6c7bc462-…".
//
// Errors are returned, never panicked (except by the Must variants), and
// wrap sentinels such as [ErrUnsafeInteger], [ErrNonFinite],
// [ErrInvalidUTF8], [ErrTooDeep] and [ErrNoUUID]; every message starts with
// "forge: ".
//
// The cross-language contract — enough to reproduce every ID in Python,
// Java or JavaScript — is SPEC.md next to this file.
package forge
