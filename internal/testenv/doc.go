// Package testenv gives every package's tests the same access to the services
// they need: RabbitMQ, Redis and PostgreSQL from the environment, and Kafka
// either from KAFKA_BROKERS or as an in-process broker. For scale-out tests it
// also gives the clustered setups of scripts/clusters.sh (a Redis Cluster,
// Redis with Sentinel, a 3-node RabbitMQ cluster) with the faults tests inject
// into them, and an in-process Kafka cluster of several brokers. For TLS it
// makes a CA and certificates at run time ([NewTLS]; no key is kept in the
// repository), and [InProcessSecureKafka] starts a broker that requires TLS
// and SASL, as managed Kafka services do.
//
// A test that needs an unreachable service is skipped with a message naming the
// service, unless FORGE_REQUIRE_SERVICES=1, in which case it fails. Messages
// show service URLs only through [RedactURL]: passwords are never printed.
package testenv
