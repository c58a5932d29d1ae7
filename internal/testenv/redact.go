package testenv

import (
	"net/url"
	"os"
	"regexp"
	"strings"
)

// redacted replaces passwords, as in [url.URL.Redacted].
const redacted = "xxxxx"

// RedactURL returns raw fit for test output: a password in the user part or
// in the query (postgres://…?password=…) is replaced by "xxxxx" and a fragment
// is dropped, as [url.URL.Redacted] does for the user part. A value that does
// not parse as a URL, or that parses only by taking part of its user part for
// host, port or path (a password with an unescaped '/', '?' or '#'), is never
// printed as is: only its scheme and, when it can be told apart, its host are
// kept ("amqp://xxxxx@127.0.0.1:5672/...").
func RedactURL(raw string) string {
	if u, ok := parseURL(raw); ok {
		r := *u
		r.Fragment, r.RawFragment = "", ""
		if r.RawQuery != "" && querySecret(r.RawQuery) {
			r.RawQuery = redacted
		}
		return r.Redacted()
	}
	return redactUnparsable(raw)
}

// parseURL parses raw and reports whether it is a URL whose parts can be
// printed: it has a scheme and an authority, and no '@' past the authority
// (one there means the authority may have been cut short inside a password).
func parseURL(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" || !strings.HasPrefix(raw[len(u.Scheme):], "://") {
		return nil, false
	}
	rest := raw[len(u.Scheme)+3:]
	end := strings.IndexAny(rest, "/?#")
	if end >= 0 && strings.Contains(rest[end:], "@") {
		return nil, false
	}
	return u, true
}

// querySecret reports whether a query may hold a secret: a key naming a
// password, secret or token, an '@', or a query that does not parse.
func querySecret(q string) bool {
	if strings.Contains(q, "@") {
		return true
	}
	vals, err := url.ParseQuery(q)
	if err != nil {
		return true
	}
	for k := range vals {
		k = strings.ToLower(k)
		if strings.Contains(k, "pass") || strings.Contains(k, "secret") || strings.Contains(k, "token") {
			return true
		}
	}
	return false
}

var (
	schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)
	hostRE   = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$`)
)

// redactUnparsable keeps the scheme and the host of raw when they can be told
// apart from a password: the host is shown only after a single '@' with no
// '?' or '#' before it (a password with a '/' is the usual mistake), or, with
// no '@' at all, when it has the shape of a host.
func redactUnparsable(raw string) string {
	if raw == "" {
		return ""
	}
	scheme, rest := "", raw
	if i := strings.Index(raw, "://"); i > 0 && schemeRE.MatchString(raw[:i]) {
		scheme, rest = raw[:i+3], raw[i+3:]
	}
	user := ""
	if at := strings.Count(rest, "@"); at > 0 {
		i := strings.LastIndex(rest, "@")
		if at > 1 || strings.ContainsAny(rest[:i], "?#") {
			return scheme + redacted
		}
		user, rest = redacted+"@", rest[i+1:]
	}
	host, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host, tail = rest[:i], "/..."
	}
	if !hostRE.MatchString(host) {
		return scheme + redacted
	}
	return scheme + user + host + tail
}

// knownSecrets returns the passwords in the service URLs of the environment,
// so that messages from drivers, which may quote a URL, can be scrubbed.
func knownSecrets() []string {
	var out []string
	add := func(s, user string) {
		if len(s) >= 4 && s != user {
			out = append(out, s)
		}
	}
	for _, env := range serviceEnvs {
		raw := os.Getenv(env)
		for _, raw := range strings.Split(raw, ",") {
			if raw == "" {
				continue
			}
			if u, err := url.Parse(raw); err == nil {
				if p, ok := u.User.Password(); ok {
					add(p, u.User.Username())
					add(url.PathEscape(p), u.User.Username())
				}
				if vals, err := url.ParseQuery(u.RawQuery); err == nil {
					for k, vs := range vals {
						if strings.Contains(strings.ToLower(k), "pass") {
							for _, v := range vs {
								add(v, "")
							}
						}
					}
				}
			}
			// The text before the last '@' is the user part however the
			// value parses.
			r := raw
			if i := strings.Index(r, "://"); i >= 0 {
				r = r[i+3:]
			}
			if i := strings.LastIndex(r, "@"); i >= 0 {
				userinfo := r[:i]
				if j := strings.Index(userinfo, ":"); j >= 0 {
					add(userinfo[j+1:], userinfo[:j])
				}
			}
		}
	}
	return out
}

// scrub replaces every password of the environment's service URLs in msg.
func scrub(msg string) string {
	for _, s := range knownSecrets() {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return msg
}
