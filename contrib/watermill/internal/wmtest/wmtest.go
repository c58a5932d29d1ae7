// Package wmtest holds what this module's tests share: the service URLs
// (the same variables and defaults as the main module's tests), a RabbitMQ
// user of their own whose connections a test can kill, and an in-process
// Kafka broker that can be restarted on the same port with its data.
//
// The main module's internal/testenv cannot be imported from this nested
// module, so the little of it needed here is repeated.
package wmtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Environment variables and their defaults (as internal/testenv).
const (
	EnvAMQP     = "AMQP_URL"
	EnvRedis    = "REDIS_URL"
	EnvPostgres = "POSTGRES_URL"
	EnvRequire  = "FORGE_REQUIRE_SERVICES"

	DefaultAMQPURL     = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// Unavailable skips t, or fails it under FORGE_REQUIRE_SERVICES=1, naming
// the missing service.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s unavailable: %v", service, err)
	if os.Getenv(EnvRequire) == "1" {
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

func service(t testing.TB, name, env, def, port string) string {
	t.Helper()
	u := lookup(env, def)
	if err := dialURL(u, port); err != nil {
		Unavailable(t, name+" ("+env+")", err)
	}
	return u
}

// AMQPURL returns the RabbitMQ URL once the server accepts connections.
func AMQPURL(t testing.TB) string {
	return service(t, "RabbitMQ", EnvAMQP, DefaultAMQPURL, "5672")
}

// RedisURL returns the Redis URL once the server accepts connections.
func RedisURL(t testing.TB) string {
	return service(t, "Redis", EnvRedis, DefaultRedisURL, "6379")
}

// PostgresURL returns the PostgreSQL URL once the server accepts
// connections.
func PostgresURL(t testing.TB) string {
	return service(t, "PostgreSQL", EnvPostgres, DefaultPostgresURL, "5432")
}

func dialURL(raw, defPort string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parse %q: %w", raw, err)
	}
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, defPort)
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

var seq atomic.Int64

// Name returns a name unique to this run, for queues, topics, tables and
// scopes.
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
	if len(clean) > 30 {
		clean = clean[len(clean)-30:]
	}
	return fmt.Sprintf("%s_%s_%d_%d", prefix, clean, time.Now().UnixNano()%1e9, seq.Add(1))
}

// RabbitUser creates a broker user for this test only and returns url
// rewritten to log in as it, and the command that closes every connection
// of that user (rabbitmqctl close_all_user_connections) — a connection
// kill that touches no other test. The user is deleted when the test ends.
func RabbitUser(t testing.TB, rawURL string) (userURL string, kill []string) {
	t.Helper()
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		Unavailable(t, "tool rabbitmqctl", err)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	if vhost == "" {
		vhost = "/"
	}
	user := Name(t, "wm")
	pass := "pw-" + user
	run := func(args ...string) error {
		out, err := exec.Command(ctl, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("add_user", user, pass); err != nil {
		Unavailable(t, "rabbitmqctl (user management)", err)
	}
	t.Cleanup(func() { _ = run("delete_user", user) })
	if err := run("set_permissions", "-p", vhost, user, ".*", ".*", ".*"); err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, pass)
	return u.String(), []string{ctl, "close_all_user_connections", user, "test: connection kill"}
}
