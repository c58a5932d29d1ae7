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
// parse as a URL the way its author meant (an unescaped '%', '#', '/' or '?'
// in the password): whenever an '@' follows "://" but the parser found no
// user information before the host, everything between "://" and the last
// '@' is treated as the user information. Query parameters whose name
// contains "pass" or "secret" are redacted too, and a fragment is dropped.
func Redact(raw string) string {
	scheme, rest, hasScheme := strings.Cut(raw, "://")
	if !hasScheme {
		rest = raw
	}
	if u, err := url.Parse(raw); err == nil && (u.User != nil || !strings.Contains(rest, "@")) {
		u.Fragment, u.RawFragment = "", ""
		if u.RawQuery != "" {
			q, err := url.ParseQuery(u.RawQuery)
			if err != nil {
				u.RawQuery = Redacted
			} else {
				for k := range q {
					lk := strings.ToLower(k)
					if strings.Contains(lk, "pass") || strings.Contains(lk, "secret") {
						q[k] = []string{Redacted}
					}
				}
				u.RawQuery = q.Encode()
			}
		}
		return u.Redacted()
	}
	if !hasScheme {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			return Redacted + "@" + stripQuery(raw[i+1:])
		}
		return stripQuery(raw)
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		user, _, _ := strings.Cut(rest[:i], ":")
		if strings.ContainsAny(user, "/?#") {
			user = Redacted
		}
		return scheme + "://" + user + ":" + Redacted + "@" + stripQuery(rest[i+1:])
	}
	return scheme + "://" + stripQuery(rest)
}

// stripQuery drops what follows a '?' or '#': in a string that does not
// parse, it may hold anything.
func stripQuery(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i]
	}
	return s
}

// ParseURL checks that raw is an AMQP URL amqp091-go can dial: it parses,
// its port is within 1-65535, and every auth_mechanism query parameter
// names a mechanism amqp091-go knows (PLAIN, AMQPLAIN or EXTERNAL, in any
// case). Its error wraps [ErrRefused] (such a URL never dials, so it is not
// worth retrying) and never contains the password: for a URL with
// credentials that does not parse it names only the redacted URL, since a
// parser's message may quote part of the password; for one that parses it
// also says which part amqp091-go refused (a query parameter such as
// heartbeat, say).
func ParseURL(raw string) error {
	if _, rest, ok := strings.Cut(raw, "://"); ok && strings.Contains(rest, "@") {
		if u, err := url.Parse(raw); err == nil && u.User == nil {
			// "amqp://user:pa/ss@host/": the parser takes "user:pa" for the
			// host and port, and the password ends up in the path.
			return fmt.Errorf("rabbitmq: URL %s does not parse as meant (an '@' after the host: percent-encode '/', '?', '#' and '@' in the user name and password): %w", Redact(raw), ErrRefused)
		}
	}
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		_, uerr := url.Parse(raw)
		switch {
		case uerr == nil:
			// The URL parses: amqp091-go refused one of its parts (the
			// scheme, the port, a query parameter's value), which its
			// message quotes; the user information is not among them.
			return fmt.Errorf("rabbitmq: URL %s: %v: %w", Redact(raw), err, ErrRefused)
		case strings.Contains(raw, "@"):
			return fmt.Errorf("rabbitmq: URL %s does not parse (percent-encode '%%', '#', '/', '@' and ':' in the user name and password): %w", Redact(raw), ErrRefused)
		}
		return fmt.Errorf("rabbitmq: URL %s: %v: %w", Redact(raw), err, ErrRefused)
	}
	if uri.Port < 1 || uri.Port > 65535 {
		return fmt.Errorf("rabbitmq: URL %s: port %d out of range: %w", Redact(raw), uri.Port, ErrRefused)
	}
	for _, m := range uri.AuthMechanism {
		switch strings.ToUpper(m) {
		case "PLAIN", "AMQPLAIN", "EXTERNAL": // what amqp091-go's dial accepts
		default:
			return fmt.Errorf("rabbitmq: URL %s: unsupported auth_mechanism %q (PLAIN, AMQPLAIN or EXTERNAL): %w", Redact(raw), m, ErrRefused)
		}
	}
	return nil
}
