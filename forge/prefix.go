package forge

import (
	"errors"
	"strings"

	"github.com/google/uuid"
)

// DefaultSeparator is the separator between a prefix and a UUID, as in the
// Python library.
const DefaultSeparator = "-"

var (
	// ErrNoUUID is returned by [Extract] when no UUID can be found in its input.
	ErrNoUUID = errors.New("forge: no valid UUID found")
	// ErrEmptySeparator is returned by [Extract] for an empty separator,
	// which Python's str.split rejects too.
	ErrEmptySeparator = errors.New("forge: empty separator")
)

// Prefix returns prefix + sep + id, or id alone when prefix is empty, like
// the Python library's generate_uuid_with_prefix.
func Prefix(prefix, sep string, id uuid.UUID) string {
	if prefix == "" {
		return id.String()
	}
	var b [36]byte
	encodeUUID(b[:], id)
	return prefix + sep + string(b[:])
}

// PrefixedID returns [Prefix](prefix, sep, id) of the ID of parts.
func (g *Generator) PrefixedID(prefix, sep string, parts ...any) (string, error) {
	u, err := g.ID(parts...)
	if err != nil {
		return "", err
	}
	return Prefix(prefix, sep, u), nil
}

// Extract returns the UUID in a prefixed ID (PREFIX<sep>UUID) or a plain
// UUID, like the Python library's extract_uuid_from_prefixed: the whole
// input is tried first, then every suffix made of the pieces after a
// separator, longest first. Each candidate is parsed as Python's UUID()
// does: "urn:" and "uuid:" removed, surrounding braces stripped, hyphens
// ignored, then exactly 32 hex digits. An empty separator is an error
// ([ErrEmptySeparator]), as in Python. An input with no UUID gives an error
// wrapping [ErrNoUUID] that names the input.
func Extract(id, sep string) (uuid.UUID, error) {
	if sep == "" {
		return uuid.Nil, errorf("extract UUID from %q: %w", id, ErrEmptySeparator)
	}
	if u, ok := parsePyUUID(id); ok {
		return u, nil
	}
	{
		rest := id
		for {
			i := strings.Index(rest, sep)
			if i < 0 {
				break
			}
			rest = rest[i+len(sep):]
			if u, ok := parsePyUUID(rest); ok {
				return u, nil
			}
		}
	}
	return uuid.Nil, errorf("extract UUID from %q (separator %q): %w", id, sep, ErrNoUUID)
}

// parsePyUUID parses s as Python's uuid.UUID(hex) does for ordinary hex
// input.
func parsePyUUID(s string) (uuid.UUID, bool) {
	if len(s) < 32 {
		return uuid.Nil, false
	}
	if len(s) == 36 {
		if u, err := uuid.Parse(s); err == nil {
			return u, true
		}
	}
	s = strings.ReplaceAll(s, "urn:", "")
	s = strings.ReplaceAll(s, "uuid:", "")
	s = strings.Trim(s, "{}")
	var u uuid.UUID
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' {
			continue
		}
		v, ok := hexVal(c)
		if !ok || n >= 32 {
			return uuid.Nil, false
		}
		if n%2 == 0 {
			u[n/2] = v << 4
		} else {
			u[n/2] |= v
		}
		n++
	}
	return u, n == 32
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
