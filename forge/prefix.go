package forge

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

// DefaultSeparator is the separator between a prefix and a UUID, as in the
// Python library.
const DefaultSeparator = "-"

var (
	// ErrNoUUID is returned by [Extract] when no UUID can be found in its input.
	ErrNoUUID = errors.New("forge: no valid UUID found")
	// ErrEmptySeparator is returned by [Extract], [CheckPrefix] and
	// [Generator.PrefixedID] for an empty separator, which Python's
	// str.split rejects too.
	ErrEmptySeparator = errors.New("forge: empty separator")
	// ErrAmbiguousPrefix is returned by [CheckPrefix] and
	// [Generator.PrefixedID] for a prefix and separator whose IDs [Extract]
	// (and Python's extract_uuid_from_prefixed) cannot read back, because
	// the separator overlaps the end of the prefix (prefix "a", separator
	// "aa").
	ErrAmbiguousPrefix = errors.New("forge: the separator overlaps the prefix, so the UUID could not be extracted")
)

// Prefix returns prefix + sep + id, or id alone when prefix is empty, like
// the Python library's generate_uuid_with_prefix. It does not check its
// arguments: [Extract] reads the result back if and only if [CheckPrefix]
// accepts prefix and sep ([Generator.PrefixedID] checks).
func Prefix(prefix, sep string, id uuid.UUID) string {
	if prefix == "" {
		return id.String()
	}
	var b [36]byte
	encodeUUID(b[:], id)
	return prefix + sep + string(b[:])
}

// PrefixedID returns [Prefix](prefix, sep, id) of the ID of parts, after
// [CheckPrefix](prefix, sep): what it returns, [Extract] with the same
// separator reads back.
func (g *Generator) PrefixedID(prefix, sep string, parts ...any) (string, error) {
	if err := CheckPrefix(prefix, sep); err != nil {
		return "", err
	}
	u, err := g.ID(parts...)
	if err != nil {
		return "", err
	}
	return Prefix(prefix, sep, u), nil
}

// CheckPrefix reports whether [Extract](Prefix(prefix, sep, id), sep)
// returns id for every id (the answer does not depend on id): prefix and
// sep must be valid UTF-8 ([ErrInvalidUTF8]), sep non-empty
// ([ErrEmptySeparator]), and the separator after the prefix must be where
// the left-to-right split of Extract (Python's str.split) finds one, which
// fails when an occurrence of sep overlaps the end of the prefix
// ([ErrAmbiguousPrefix]). An empty prefix (a bare UUID) needs only a valid
// separator.
func CheckPrefix(prefix, sep string) error {
	switch {
	case !utf8.ValidString(prefix):
		return errorf("prefix %q: %w", prefix, ErrInvalidUTF8)
	case !utf8.ValidString(sep):
		return errorf("separator %q: %w", sep, ErrInvalidUTF8)
	case sep == "":
		return errorf("prefix %q: %w", prefix, ErrEmptySeparator)
	case prefix == "":
		return nil
	}
	// Whether Extract finds the UUID depends on prefix and sep only: the
	// candidates it tries that start before the UUID hold all its digits
	// (and parse if and only if the prefix characters in them are ones
	// that Python's UUID() ignores), and those that start inside it hold
	// too few. One probe therefore answers for every UUID.
	probe := uuid.NameSpaceDNS
	if got, err := Extract(Prefix(prefix, sep, probe), sep); err != nil || got != probe {
		return errorf("prefix %q, separator %q: %w", prefix, sep, ErrAmbiguousPrefix)
	}
	return nil
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
