package testenv

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// fakeCtl writes a rabbitmqctl stand-in that appends its arguments to
// dir/args and its standard input to dir/stdin.
func fakeCtl(t *testing.T) (ctl, dir string) {
	t.Helper()
	dir = t.TempDir()
	ctl = filepath.Join(dir, "rabbitmqctl")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$(dirname \"$0\")/args\"\ncat >> \"$(dirname \"$0\")/stdin\"\n"
	if err := os.WriteFile(ctl, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return ctl, dir
}

// TestRabbitUserPasswordNotOnCommandLine checks that a user's password is
// random and reaches rabbitmqctl only on standard input, never as an argument
// (arguments are visible to every local user in ps).
func TestRabbitUserPasswordNotOnCommandLine(t *testing.T) {
	ctl, dir := fakeCtl(t)
	ctx := Context(t, 30*time.Second)
	var passwords []string
	for _, name := range []string{"u_one", "u_two"} {
		u, err := AddRabbitUser(ctx, []string{ctl, "-n", "uf1@localhost"}, "amqp://guest:guest@127.0.0.1:5672/", name)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := url.Parse(u.URL)
		if err != nil {
			t.Fatal(err)
		}
		pass, _ := parsed.User.Password()
		if parsed.User.Username() != name || len(pass) < 32 || strings.Contains(pass, name) {
			t.Fatalf("user URL %s: want user %s and a random password of at least 32 characters", RedactURL(u.URL), name)
		}
		passwords = append(passwords, pass)
	}
	if passwords[0] == passwords[1] {
		t.Fatal("two users got the same password")
	}
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := os.ReadFile(filepath.Join(dir, "stdin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pass := range passwords {
		if strings.Contains(string(args), pass) {
			t.Errorf("a password is on rabbitmqctl's command line:\n%s", args)
		}
		if !strings.Contains(string(stdin), pass+"\n") {
			t.Errorf("a password was not given on rabbitmqctl's standard input")
		}
	}
	want := "-n uf1@localhost add_user u_one\n-n uf1@localhost set_permissions -p / u_one .* .* .*\n"
	if !strings.HasPrefix(string(args), want) {
		t.Errorf("rabbitmqctl ran with\n%s\nwant it to start with\n%s", args, want)
	}
}

func TestRabbitUserRejectsUnsafeArguments(t *testing.T) {
	ctl, _ := fakeCtl(t)
	ctx := Context(t, 30*time.Second)
	for _, name := range []string{"", "a b", "a$(id)", "a`id`", `a"b`, "a;b"} {
		if _, err := AddRabbitUser(ctx, []string{ctl}, "amqp://guest:guest@127.0.0.1:5672/", name); err == nil {
			t.Errorf("user name %q accepted", name)
		}
	}
	u, err := AddRabbitUser(ctx, []string{ctl}, "amqp://guest:guest@127.0.0.1:5672/", "ok")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.CloseConnections(ctx, "kill $(id)"); err == nil {
		t.Error("close reason with shell syntax accepted")
	}
}

// TestRabbitUserCloseConnections checks against the real broker that the
// user's URL logs in and that closing the user's connections leaves other
// users' connections alone.
func TestRabbitUserCloseConnections(t *testing.T) {
	admin := AMQPURL(t)
	u := NewRabbitUser(t, admin)
	mine, err := amqp.Dial(u.URL)
	if err != nil {
		t.Fatalf("dial as %s: %v", u.Name, err)
	}
	defer mine.Close()
	other, err := amqp.Dial(admin)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	closed := mine.NotifyClose(make(chan *amqp.Error, 1))
	if err := u.CloseConnections(Context(t, time.Minute), "testenv: connection kill"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the user's connection is still open")
	}
	if other.IsClosed() {
		t.Fatal("another user's connection was closed")
	}
	ch, err := other.Channel()
	if err != nil {
		t.Fatalf("another user's connection: %v", err)
	}
	ch.Close()
}
