// Package testenv gives every package's tests the same access to the services
// they need: RabbitMQ, Redis and PostgreSQL from the environment, and Kafka
// either from KAFKA_BROKERS or as an in-process broker.
//
// A test that needs an unreachable service is skipped with a message naming the
// service, unless FORGE_REQUIRE_SERVICES=1, in which case it fails. Messages
// show service URLs only through [RedactURL]: passwords are never printed.
package testenv
