package testenv

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// recorder is a testing.TB that records what Skip and Fatal print and stops
// the calling goroutine as they do.
type recorder struct {
	testing.TB
	msgs []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Skip(args ...any)          { r.stop(fmt.Sprint(args...)) }
func (r *recorder) Skipf(f string, a ...any)  { r.stop(fmt.Sprintf(f, a...)) }
func (r *recorder) Fatal(args ...any)         { r.stop(fmt.Sprint(args...)) }
func (r *recorder) Fatalf(f string, a ...any) { r.stop(fmt.Sprintf(f, a...)) }
func (r *recorder) Errorf(f string, a ...any) { r.msgs = append(r.msgs, fmt.Sprintf(f, a...)) }
func (r *recorder) Logf(f string, a ...any)   { r.msgs = append(r.msgs, fmt.Sprintf(f, a...)) }
func (r *recorder) stop(msg string) {
	r.msgs = append(r.msgs, msg)
	runtime.Goexit()
}

// output runs fn with a recorder and returns everything it printed.
func output(fn func(testing.TB)) string {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return strings.Join(r.msgs, "\n")
}

// TestUnavailableRedactsPasswords points each service variable at an
// unreachable server, or at a value that does not parse as a URL, with a
// password in it: the skip or failure message must name the service without
// showing the password.
func TestUnavailableRedactsPasswords(t *testing.T) {
	const secret = "hunter2-s3cret"
	accessors := []struct {
		env string
		get func(testing.TB) string
	}{
		{EnvAMQP, func(t testing.TB) string { return AMQPURL(t) }},
		{EnvRedis, func(t testing.TB) string { return RedisURL(t) }},
		{EnvPostgres, func(t testing.TB) string { return PostgresURL(t) }},
	}
	values := []struct {
		name, value string
		shows       string // what the message must show instead
	}{
		{"unreachable", "scheme://user:" + secret + "@127.0.0.1:1/x", "scheme://user:xxxxx@127.0.0.1:1/x"},
		{"unparsable (slash in the password)", "scheme://user:" + secret + "/more@127.0.0.1:1/x", "xxxxx@127.0.0.1:1"},
		{"unparsable (space in the password)", "scheme://user:" + secret + " x@127.0.0.1:1/x", "xxxxx@127.0.0.1:1"},
		{"parsable only as a wrong host (# in the password)", "scheme://user:12#" + secret + "@127.0.0.1:1/x", "scheme://xxxxx"},
		{"no scheme", "user:" + secret + "@127.0.0.1:1", "xxxxx@127.0.0.1:1"},
		{"password in the query", "scheme://127.0.0.1:1/x?sslmode=disable&password=" + secret, "scheme://127.0.0.1:1/x?xxxxx"},
	}
	for _, required := range []string{"", "1"} {
		for _, a := range accessors {
			for _, v := range values {
				t.Run(fmt.Sprintf("%s/%s/required=%s", a.env, v.name, required), func(t *testing.T) {
					t.Setenv(EnvRequire, required)
					t.Setenv(a.env, v.value)
					msg := output(func(r testing.TB) { a.get(r) })
					if msg == "" {
						t.Fatal("no skip or failure")
					}
					if strings.Contains(msg, secret) {
						t.Errorf("the message shows the password: %s", msg)
					}
					if !strings.Contains(msg, a.env) || !strings.Contains(msg, v.shows) {
						t.Errorf("the message %q should name %s and show %q", msg, a.env, v.shows)
					}
				})
			}
		}
	}
}

func TestRedactURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://:p%40ss@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
		{"postgres://h/db?sslmode=disable&PassWord=x", "postgres://h/db?xxxxx"},
		{"postgres://h/db?password=a&b", "postgres://h/db?xxxxx"},
		{"amqp://u:p@h/v#frag", "amqp://u:xxxxx@h/v"},
		{"amqp://u:pa/ss@h:5672/v", "amqp://xxxxx@h:5672/..."},
		{"amqp://u:12/ss@h:5672/v", "amqp://xxxxx@h:5672/..."},
		{"amqp://u:12?ss@h:5672/v", "amqp://xxxxx"},
		{"amqp://u:p@ss/x@h:5672/v", "amqp://xxxxx"},
		{"postgres://h/db?password=a@evil%zz", "postgres://xxxxx"},
		{"amqp://h:5672/v x\x00", "amqp://h:5672/..."},
		{"u:secret@h:5672", "xxxxx@h:5672"},
		{"amqp://u:pa ss@h", "amqp://xxxxx@h"},
		{"amqp://u:pass@h:port/", "amqp://xxxxx"},
		{"amqp://u:p@h\x7f/", "amqp://xxxxx"},
		{"", ""},
	}
	for _, tc := range cases {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzRedactURL puts arbitrary passwords into the places a URL carries them
// (userinfo, query) and checks that none is ever printed.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"guest2", "p@ss", "a/b", "12/cd", "12#cd", "a?b", "x&y=z", "%zz", "a b", "h:1/v", "@h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pass string) {
		// Each template, with every form its redaction may take.
		templates := map[string][]string{
			"amqp://user:%s@h.example:5672/v": {
				"amqp://user:xxxxx@h.example:5672/v", "amqp://xxxxx@h.example:5672/...", "amqp://xxxxx"},
			"postgres://h.example/db?sslmode=disable&password=%s": {
				"postgres://h.example/db?xxxxx", "postgres://h.example/...", "postgres://xxxxx"},
			"postgres://h.example/db?password=%s&sslmode=disable": {
				"postgres://h.example/db?xxxxx", "postgres://h.example/...", "postgres://xxxxx"},
		}
		for tmpl, allowed := range templates {
			raw := fmt.Sprintf(tmpl, pass)
			if got := RedactURL(raw); !slices.Contains(allowed, got) {
				t.Errorf("RedactURL(%q) = %q, want one of %q", raw, got, allowed)
			}
		}
	})
}

// TestUnavailableScrubsDriverErrors checks that a password of a service URL is
// hidden even when a driver's error quotes it.
func TestUnavailableScrubsDriverErrors(t *testing.T) {
	const secret = "hunter2-s3cret"
	t.Setenv(EnvRequire, "")
	t.Setenv(EnvPostgres, "postgres://app:"+secret+"@127.0.0.1:1/db")
	msg := output(func(r testing.TB) {
		Unavailable(r, "PostgreSQL", fmt.Errorf("connect postgres://app:%s@127.0.0.1:1/db: refused", secret))
	})
	if strings.Contains(msg, secret) || !strings.Contains(msg, "app:xxxxx@127.0.0.1:1") {
		t.Errorf("message %q", msg)
	}
}
