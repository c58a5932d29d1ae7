package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/kafkatest"
)

// The service addresses come from the environment; the defaults are the
// local services of the repository's docker-compose.yml.
const (
	envAMQP         = "AMQP_URL"
	defaultAMQP     = "amqp://guest:guest@127.0.0.1:5672/"
	envRedis        = "REDIS_URL"
	defaultRedis    = "redis://127.0.0.1:6379/0"
	envPostgres     = "POSTGRES_URL"
	defaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	envKafka        = "KAFKA_BROKERS" // comma-separated host:port; unset: an in-process broker
)

// env returns the environment variable name, or def when it is unset.
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// startKafka returns the Kafka cluster named by KAFKA_BROKERS, or starts an
// in-process broker (package kafkatest) when it is unset, so that the
// program needs no installation. stop shuts the in-process broker down;
// its records go with it, so a service that restarts needs KAFKA_BROKERS.
func startKafka() (brokers []string, inProcess bool, stop func(), err error) {
	if v := os.Getenv(envKafka); v != "" {
		return strings.Split(v, ","), false, func() {}, nil
	}
	b, err := kafkatest.New()
	if err != nil {
		return nil, false, nil, err
	}
	return b.Brokers(), true, b.Close, nil
}

// createTopic creates topic with 3 partitions unless it exists, so that a
// consumer started before the first record finds its partitions.
func createTopic(ctx context.Context, brokers []string, topic string) error {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
	resp, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{
		Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: 3, ReplicationFactor: 1}},
	})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return fmt.Errorf("kafka: create topic %s: %w", topic, err)
	}
	return nil
}

// parseURL parses raw and reports whether it is a URL with a host whose
// user part url.Parse found whole. An '@' after the end of the authority
// means a password holds an unescaped '/', '?' or '#': the parser then
// takes part of the password for the host, port or path, which drivers
// quote in their errors.
func parseURL(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, false
	}
	_, rest, _ := strings.Cut(raw, "://")
	if i := strings.IndexAny(rest, "/?#"); i >= 0 && strings.Contains(rest[i:], "@") {
		return nil, false
	}
	return u, true
}

// checkURL returns an error that names only the redacted URL when raw
// cannot be handed to a driver safely. Call it before the driver parses a
// URL: a parser's error may quote the URL, password included.
func checkURL(service, raw string) error {
	if _, ok := parseURL(raw); !ok {
		return fmt.Errorf("%s URL %s does not parse (percent-encode '/', '?', '#', '%%' and '@' in the user name and password)", service, redact(raw))
	}
	return nil
}

// redact returns raw fit for printing, with a password in the user part or
// in the query (?password=) replaced by "xxxxx", as (*url.URL).Redacted
// does, and without a fragment (which an unescaped '#' in a password
// starts). Of a URL that does not parse it shows only the scheme, and of a
// query that does not parse nothing.
func redact(raw string) string {
	u, ok := parseURL(raw)
	if !ok {
		if scheme, _, found := strings.Cut(raw, "://"); found && !strings.ContainsAny(scheme, "@:/?#") {
			return scheme + "://xxxxx"
		}
		return "xxxxx"
	}
	u.Fragment, u.RawFragment = "", ""
	if q, err := url.ParseQuery(u.RawQuery); err != nil {
		u.RawQuery = "xxxxx" // the password may be anywhere in it
	} else if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
