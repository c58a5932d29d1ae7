package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Environment variables and their defaults.
const (
	EnvAMQP     = "AMQP_URL"
	EnvRedis    = "REDIS_URL"
	EnvPostgres = "POSTGRES_URL"
	EnvKafka    = "KAFKA_BROKERS"
	EnvRequire  = "FORGE_REQUIRE_SERVICES"

	DefaultAMQPURL     = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// serviceEnvs are the variables whose values may hold passwords.
var serviceEnvs = []string{EnvAMQP, EnvRedis, EnvPostgres, EnvAMQPCluster, EnvRedisCluster, EnvRedisSentinel}

// Required reports whether FORGE_REQUIRE_SERVICES=1: a missing service fails
// the test instead of skipping it.
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// Unavailable skips t (or fails it when services are required) with a message
// naming the missing service and why. A password of the service URLs in the
// environment is replaced by "xxxxx" wherever it appears in the message.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	msg := scrub(fmt.Sprintf("%s unavailable: %v", service, err))
	if Required() {
		t.Fatalf("%s (%s=1: integration tests may not be skipped)", msg, EnvRequire)
	}
	t.Skip(msg)
}

func lookup(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// AMQPURL returns the RabbitMQ URL after checking that the server accepts TCP
// connections.
func AMQPURL(t testing.TB) string {
	t.Helper()
	return service(t, "RabbitMQ", EnvAMQP, DefaultAMQPURL, "5672")
}

// RedisURL returns the Redis URL after checking that the server accepts TCP
// connections.
func RedisURL(t testing.TB) string {
	t.Helper()
	return service(t, "Redis", EnvRedis, DefaultRedisURL, "6379")
}

// PostgresURL returns the PostgreSQL URL after checking that the server accepts
// TCP connections.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return service(t, "PostgreSQL", EnvPostgres, DefaultPostgresURL, "5432")
}

// service returns the URL in env (default def) after checking that its server
// accepts TCP connections; the URL appears in messages only redacted.
func service(t testing.TB, name, env, def, defPort string) string {
	t.Helper()
	u := lookup(env, def)
	if err := dialURL(u, defPort); err != nil {
		Unavailable(t, fmt.Sprintf("%s (%s=%s)", name, env, RedactURL(u)), err)
	}
	return u
}

// errNotURL is what a value that does not parse is reported as: the parser's
// own error quotes the value, password included.
var errNotURL = errors.New("not a valid URL (percent-encode '/', '?', '#', '@' and spaces in a password)")

func dialURL(raw, defPort string) error {
	u, ok := parseURL(raw)
	if !ok || u.Host == "" {
		return errNotURL
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), defPort)
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

var seq atomic.Int64

// Name returns a name unique to this test run, for queues, topics, tables and
// key prefixes that must not collide with other tests or earlier runs.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, t.Name())
	if len(clean) > 40 {
		clean = clean[len(clean)-40:]
	}
	return fmt.Sprintf("%s_%s_%d_%d", prefix, clean, time.Now().UnixNano()%1e9, seq.Add(1))
}

// Context returns a context cancelled when the test ends or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Tool returns the path of an external command-line tool (kcat, python3 with
// pika, rabbitmqctl), skipping or failing the test when it is missing.
// scripts/services.sh installs them.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "tool "+name, fmt.Errorf("%w (scripts/services.sh installs it)", err))
	}
	return p
}

// Python returns a Python interpreter that can import pika (Debian's
// python3-pika installs into /usr/bin/python3, which may not be first on PATH).
func Python(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(p, "-c", "import pika").Run(); err == nil {
			return p
		}
	}
	Unavailable(t, "python3-pika", fmt.Errorf("no python3 can import pika (scripts/services.sh installs python3-pika)"))
	return ""
}
