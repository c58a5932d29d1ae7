// Package retry is the retry loop shared by the RabbitMQ and Kafka
// publishers: publish again with the same ID under a back-off until the
// broker acknowledges, the failure is permanent, or the context ends.
package retry
