package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitUser is a RabbitMQ user that exists for one test or one run, so that
// closing "every connection of the user" touches no other test's
// connections. Its password is random and never appears on a command line:
// rabbitmqctl reads it from standard input. Safe for concurrent use.
type RabbitUser struct {
	// Name is the user's name.
	Name string
	// URL is the admin URL with this user's credentials.
	URL string

	ctl []string
}

// safeArg matches what may be passed to rabbitmqctl: the Debian wrapper
// re-quotes arguments into a shell command line when run as root, escaping
// only double quotes.
var (
	safeArg  = regexp.MustCompile(`^[A-Za-z0-9 _.:,/-]*$`)
	userName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
)

// AddRabbitUser adds the user name, with a random password and all
// permissions on the virtual host of adminURL, through the rabbitmqctl
// command ctl (the program and any leading arguments, such as "-n",
// "uf1@localhost" to reach a cluster node). name may hold letters, digits and
// "_.-". Delete removes the user again.
func AddRabbitUser(ctx context.Context, ctl []string, adminURL, name string) (*RabbitUser, error) {
	if len(ctl) == 0 {
		return nil, fmt.Errorf("testenv: rabbitmqctl command missing")
	}
	if !userName.MatchString(name) {
		return nil, fmt.Errorf("testenv: RabbitMQ user name %q: only letters, digits and _.- are allowed", name)
	}
	uri, err := amqp.ParseURI(adminURL)
	if err != nil {
		return nil, fmt.Errorf("testenv: RabbitMQ URL %s: %w", RedactURL(adminURL), errNotURL)
	}
	if !safeArg.MatchString(uri.Vhost) {
		return nil, fmt.Errorf("testenv: RabbitMQ virtual host %q: unsupported characters", uri.Vhost)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("testenv: random password: %w", err)
	}
	pass := hex.EncodeToString(b[:])
	u := &RabbitUser{Name: name, ctl: ctl}
	// Without a password argument, add_user reads the password from stdin.
	if err := u.run(ctx, pass+"\n", "add_user", name); err != nil {
		return nil, err
	}
	if err := u.run(ctx, "", "set_permissions", "-p", uri.Vhost, name, ".*", ".*", ".*"); err != nil {
		_ = u.Delete(context.WithoutCancel(ctx))
		return nil, err
	}
	parsed, err := url.Parse(adminURL)
	if err != nil {
		_ = u.Delete(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("testenv: RabbitMQ URL %s: %w", RedactURL(adminURL), errNotURL)
	}
	parsed.User = url.UserPassword(name, pass)
	u.URL = parsed.String()
	return u, nil
}

// CloseConnections makes the broker close every connection of the user,
// giving reason (letters, digits, spaces and "_.:,-") to the clients.
func (u *RabbitUser) CloseConnections(ctx context.Context, reason string) error {
	if !safeArg.MatchString(reason) {
		return fmt.Errorf("testenv: close reason %q: unsupported characters", reason)
	}
	return u.run(ctx, "", "close_all_user_connections", u.Name, reason)
}

// Delete deletes the user (its connections are closed by the broker).
func (u *RabbitUser) Delete(ctx context.Context) error {
	return u.run(ctx, "", "delete_user", u.Name)
}

func (u *RabbitUser) run(ctx context.Context, stdin string, args ...string) error {
	cmd := exec.CommandContext(ctx, u.ctl[0], append(append([]string{}, u.ctl[1:]...), args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("testenv: %s %s: %w: %s", u.ctl[0], args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewRabbitUser adds a user for this test on the broker of adminURL (see
// [AddRabbitUser]) and deletes it when the test ends. A broker whose users
// cannot be managed with rabbitmqctl makes the test unavailable.
func NewRabbitUser(t testing.TB, adminURL string) *RabbitUser {
	t.Helper()
	return newRabbitUser(t, []string{Tool(t, "rabbitmqctl")}, adminURL)
}

func newRabbitUser(t testing.TB, ctl []string, adminURL string) *RabbitUser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := AddRabbitUser(ctx, ctl, adminURL, Name(t, "u"))
	if err != nil {
		Unavailable(t, "rabbitmqctl (user management)", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := u.Delete(ctx); err != nil {
			t.Logf("%v", err)
		}
	})
	return u
}
