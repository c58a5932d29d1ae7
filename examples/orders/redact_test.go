package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

// TestRunHidesPasswords gives the program service URLs whose password a
// parser would quote or misread, and checks that neither the error nor the
// output shows any part of the password.
func TestRunHidesPasswords(t *testing.T) {
	const secret = "secret99"
	amqpURL, redisURL, pgURL := testenv.AMQPURL(t), testenv.RedisURL(t), testenv.PostgresURL(t)
	var cases []config
	for _, broken := range []func(pw string) config{
		func(pw string) config {
			return config{AMQPURL: "amqp://guest:" + pw + "@127.0.0.1:5672/", RedisURL: redisURL, PostgresURL: pgURL}
		},
		func(pw string) config {
			return config{AMQPURL: amqpURL, RedisURL: "redis://:" + pw + "@127.0.0.1:6379/0", PostgresURL: pgURL}
		},
		func(pw string) config {
			return config{AMQPURL: amqpURL, RedisURL: redisURL, PostgresURL: "postgres://app:" + pw + "@127.0.0.1:5432/test"}
		},
	} {
		for _, pw := range []string{
			"pw/" + secret,   // '/' in the password: the parser stops the host there
			"2024/" + secret, // ... and takes "2024" for a port and the rest for the path
			"pw%zz" + secret, // a bad escape
		} {
			cases = append(cases, broken(pw))
		}
	}
	cases = append(cases,
		config{AMQPURL: amqpURL, RedisURL: "redis://:" + secret + "@127.0.0.1:6379/x", PostgresURL: pgURL}, // a bad database number
		config{AMQPURL: amqpURL, RedisURL: redisURL, PostgresURL: "postgres://app@127.0.0.1:5432/test?password=" + secret + "&sslmode=bogus"},
	)
	for _, cfg := range cases {
		cfg.Namespace, cfg.Schema, cfg.Queue = "shop.example.com", "uuidforge_orders_never_created", "uuidforge.orders.never.declared"
		cfg.Dir, cfg.Timeout = t.TempDir(), 10*time.Second
		var out bytes.Buffer
		err := run(t.Context(), cfg, &out)
		if err == nil {
			t.Errorf("run with %s, %s, %s: no error", redact(cfg.AMQPURL), redact(cfg.RedisURL), redact(cfg.PostgresURL))
			continue
		}
		if strings.Contains(err.Error()+out.String(), secret) {
			t.Errorf("the password shows:\nerror: %v\noutput: %s", err, out.String())
		}
	}
}
