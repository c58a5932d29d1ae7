// Package forge computes deterministic UUIDs from business data, so that
// every process, in any language, derives the same ID for the same entity
// without a central ID service.
//
// A [Generator] is bound to a namespace and a scheme. Its [Generator.ID]
// hashes the canonical name of its parts: the RFC 8785 (JCS) serialization
// of the JSON array of the parts ([Canonical]).
//
//	users := forge.MustNew("users")
//	id, err := users.ID("john@example.com")     // one part
//	id, err = invoices.ID("EUR", 12345)          // several parts
//	id, err = orders.ID(order)                   // a struct or map, by its JSON form
//
// Schemes: [SchemeV5] (default) is RFC 9562 UUIDv5(namespace, name);
// [SchemeKeyed] (chosen by [WithSecret]) is a UUIDv8 from
// HMAC-SHA256(secret, namespace ‖ name) that nobody without the secret can
// predict; [SchemePython] reproduces the Python uuid-forge 0.1.x library.
// The cross-language contract is written in SPEC.md next to this file.
package forge
