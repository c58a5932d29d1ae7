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

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/":                     "amqp://guest:xxxxx@127.0.0.1:5672/",
		"redis://127.0.0.1:6379/0":                               "redis://127.0.0.1:6379/0",
		"redis://:secret@127.0.0.1:6379/0":                       "redis://:xxxxx@127.0.0.1:6379/0",
		"postgres://app@db/shop?password=secret&sslmode=disable": "postgres://app@db/shop?password=xxxxx&sslmode=disable",
		"postgres://app:pw/secret99@127.0.0.1:5432/test":         "postgres://xxxxx",
		"postgres://app:2024/secret99@127.0.0.1:5432/test":       "postgres://xxxxx",
		"postgres://app:pw%zzsecret99@127.0.0.1:5432/test":       "postgres://xxxxx",
		"postgres://app@127.0.0.1/test?password=ab#secret99":     "postgres://app@127.0.0.1/test?password=xxxxx",
		"app:secret@127.0.0.1:5432":                              "xxxxx",
		"":                                                       "xxxxx",
	} {
		if got := redact(raw); got != want {
			t.Errorf("redact(%q) = %q, want %q", raw, got, want)
		}
	}
}

// FuzzRedact checks that no part of a URL's password survives redact,
// whatever the user name, password and host: in the user part, and in the
// query as PostgreSQL URLs allow.
func FuzzRedact(f *testing.F) {
	for _, s := range [][3]string{
		{"guest", "guest123", "127.0.0.1:5672"}, {"app", "pw/secret99", "h"}, {"", "2024/5678", "h:1"},
		{"u", "a@bcdef", "h"}, {"u", "p%zzqrst", "h"}, {"u", "p?q#rstu", "h"}, {"u:v", "wxyz", "h/x"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, user, pw, host string) {
		for _, raw := range []string{
			"redis://" + user + ":" + pw + "@" + host + "/0",
			"postgres://" + user + "@" + host + "/db?sslmode=disable&password=" + pw,
		} {
			got := redact(raw)
			// A password of 4 bytes or more that the rest of the URL, or
			// the redacted form's own text, does not contain anyway.
			if len(pw) < 4 || strings.Contains(user+host+raw[:strings.Index(raw, "://")+3]+"xxxxx@:/?=&db0sslmodedisablepassword", pw) {
				continue
			}
			if strings.Contains(got, pw) {
				t.Fatalf("redact(%q) = %q shows the password %q", raw, got, pw)
			}
		}
	})
}
