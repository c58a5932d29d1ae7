package rabbitmq

import (
	"fmt"
	"net/url"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Redacted is what [Redact] prints instead of a password, as
// (*url.URL).Redacted and pgx do.
const Redacted = "xxxxx"

// Redact returns raw with its password replaced by [Redacted], for logs and
// errors. It never returns the password, even for a string that does not
// parse as a URL (an unescaped '%', '#' or '/' in the password): then
// everything between "://" and the last '@' is replaced.
func Redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		if strings.Contains(raw, "@") {
			return Redacted + "@" + raw[strings.LastIndex(raw, "@")+1:]
		}
		return raw
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		user, _, _ := strings.Cut(rest[:i], ":")
		if strings.ContainsAny(user, "/?#") {
			user = Redacted
		}
		return scheme + "://" + user + ":" + Redacted + "@" + rest[i+1:]
	}
	return raw
}

// ParseURL checks that raw is an AMQP URL amqp091-go can dial. Its error
// wraps [ErrRefused] (a URL that can never parse is not worth retrying) and
// never contains the password: for a URL with credentials it names only
// the redacted URL, since a parser's message may quote part of the
// password.
func ParseURL(raw string) error {
	if _, err := amqp.ParseURI(raw); err != nil {
		if strings.Contains(raw, "@") {
			return fmt.Errorf("rabbitmq: URL %s does not parse (percent-encode '%%', '#', '/', '@' and ':' in the user name and password): %w", Redact(raw), ErrRefused)
		}
		return fmt.Errorf("rabbitmq: URL %s: %v: %w", Redact(raw), err, ErrRefused)
	}
	return nil
}
