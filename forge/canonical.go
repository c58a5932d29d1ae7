package forge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MaxSafeInteger is the largest integer magnitude (2^53−1) that a part may
// carry as a JSON number. Larger integers must be passed as strings, because
// JavaScript and other IEEE-754-only consumers cannot represent them exactly.
const MaxSafeInteger = 1<<53 - 1

var (
	// ErrUnsafeInteger is returned for an integer whose magnitude exceeds
	// [MaxSafeInteger]; pass such values as strings.
	ErrUnsafeInteger = errors.New("forge: integer magnitude exceeds 2^53-1; pass it as a string")
	// ErrNonFinite is returned for NaN and ±Inf, which JSON cannot represent.
	ErrNonFinite = errors.New("forge: NaN and Inf have no JSON form")
	// ErrInvalidUTF8 is returned for a string that is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("forge: string is not valid UTF-8")
	// ErrUnsupported is returned for a value that cannot be encoded as JSON
	// (a channel, a function, a complex number, a map with struct keys...).
	ErrUnsupported = errors.New("forge: value cannot be encoded as JSON")
	// ErrTooDeep is returned for a value nested deeper than [MaxDepth]
	// levels of arrays and objects, and for a cyclic value.
	ErrTooDeep = errors.New("forge: value nested too deeply or cyclic")
)

// Canonical returns the canonical name of parts: the RFC 8785 (JCS)
// serialization, in UTF-8, of the JSON array of the parts in order. It is
// the byte string that the default and keyed schemes hash; see SPEC.md.
//
// Structs, maps and slices are encoded by encoding/json's rules (field
// names and tags, embedding, MarshalJSON, MarshalText), and at any depth
// by the same rules as parts: a float32 is the double of the same value
// (0.1f is 0.10000000149011612), a nil []byte is "" like an empty one, a
// time.Time is written in UTC. A string that is not valid UTF-8 anywhere
// ([ErrInvalidUTF8]), an integer beyond ±(2^53−1) ([ErrUnsafeInteger]),
// NaN or ±Inf ([ErrNonFinite]), nesting deeper than [MaxDepth] or a cyclic
// value ([ErrTooDeep]) is an error.
func Canonical(parts ...any) ([]byte, error) {
	return appendCanonical(nil, parts)
}

// AppendCanonical appends the canonical name of parts to dst and returns the
// extended buffer.
func AppendCanonical(dst []byte, parts ...any) ([]byte, error) {
	return appendCanonical(dst, parts)
}

func appendCanonical(dst []byte, parts []any) ([]byte, error) {
	dst = append(dst, '[')
	for i, p := range parts {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		dst, err = appendValue(dst, p)
		if err != nil {
			return nil, errorf("part %d (%T): %w", i, p, err)
		}
	}
	return append(dst, ']'), nil
}

// appendValue encodes one part. Simple kinds are written by appendSimple;
// anything else by appendReflect (encode.go), which applies encoding/json's
// field rules but writes the canonical form itself, in one pass. Only the
// output of a MarshalJSON method is parsed and canonicalized.
func appendValue(dst []byte, v any) ([]byte, error) {
	out, ok, err := appendSimple(dst, v)
	if ok || err != nil {
		return out, err
	}
	return appendReflect(dst, v)
}

// appendSimpleParts writes the canonical array of parts when every part is
// of a simple kind; ok is false (and dst untouched) otherwise. It never
// lets dst escape, so callers can pass a stack buffer.
func appendSimpleParts(dst []byte, parts []any) (out []byte, ok bool, err error) {
	start := len(dst)
	dst = append(dst, '[')
	for i, p := range parts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst, ok, err = appendSimple(dst, p)
		if err != nil {
			// reflect.TypeOf keeps p from escaping, so callers' parts can
			// stay on their stack.
			return nil, true, errorf("part %d (%s): %w", i, reflect.TypeOf(p), err)
		}
		if !ok {
			return dst[:start], false, nil
		}
	}
	return append(dst, ']'), true, nil
}

// appendSimple encodes v if it is of one of the simple types that
// appendSimpleKind writes without reflection; ok is false otherwise.
func appendSimple(dst []byte, v any) (out []byte, ok bool, err error) {
	out, err = appendSimpleKind(dst, v)
	if err == errNotSimple {
		return dst, false, nil
	}
	return out, true, err
}

var errNotSimple = errors.New("forge: not a simple kind")

func appendSimpleKind(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		return appendString(dst, x)
	case bool:
		return strconv.AppendBool(dst, x), nil
	case int:
		return appendInt(dst, int64(x))
	case int8:
		return appendInt(dst, int64(x))
	case int16:
		return appendInt(dst, int64(x))
	case int32:
		return appendInt(dst, int64(x))
	case int64:
		return appendInt(dst, x)
	case uint:
		return appendUint(dst, uint64(x))
	case uint8:
		return appendUint(dst, uint64(x))
	case uint16:
		return appendUint(dst, uint64(x))
	case uint32:
		return appendUint(dst, uint64(x))
	case uint64:
		return appendUint(dst, x)
	case uintptr:
		return appendUint(dst, uint64(x))
	case float64:
		return appendFloat(dst, x)
	case float32:
		// JCS numbers are doubles: a float32 is the double of the same
		// value, 0.1f is 0.10000000149011612 (not the shortest 32-bit text).
		return appendFloat(dst, float64(x))
	case uuid.UUID:
		return appendUUID(dst, x), nil
	case *uuid.UUID:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendUUID(dst, *x), nil
	case time.Time:
		return appendTime(dst, x), nil
	case *time.Time:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendTime(dst, *x), nil
	case []byte:
		// nil is "" too: a byte string has no null.
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, x)
		return append(dst, '"'), nil
	case json.Number:
		return appendJSONNumber(dst, x)
	case *big.Int:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendBigInt(dst, x)
	}
	return dst, errNotSimple
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

func appendUUID(dst []byte, u uuid.UUID) []byte {
	dst = append(dst, '"')
	var b [36]byte
	encodeUUID(b[:], u)
	dst = append(dst, b[:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

func encodeUUID(dst []byte, u uuid.UUID) {
	j := 0
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j] = hexDigits[b>>4]
		dst[j+1] = hexDigits[b&0x0f]
		j += 2
	}
}

func appendInt(dst []byte, v int64) ([]byte, error) {
	if v > MaxSafeInteger || v < -MaxSafeInteger {
		return nil, errorf("%d: %w", v, ErrUnsafeInteger)
	}
	return strconv.AppendInt(dst, v, 10), nil
}

func appendUint(dst []byte, v uint64) ([]byte, error) {
	if v > MaxSafeInteger {
		return nil, errorf("%d: %w", v, ErrUnsafeInteger)
	}
	return strconv.AppendUint(dst, v, 10), nil
}

// appendString writes s as a JCS string: only '"', '\\' and the C0 controls
// are escaped; \b \t \n \f \r use their short forms, other controls \u00xx.
func appendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return nil, errorf("%q at byte %d: %w", strings.Clone(s), i, ErrInvalidUTF8)
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

// appendFloat writes f as ECMAScript's Number.prototype.toString does (the
// JCS number form): shortest round-trip digits, plain notation for decimal
// exponents in [-6, 21), exponent notation otherwise, and -0 as 0.
func appendFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, errorf("%v: %w", f, ErrNonFinite)
	}
	if f == 0 {
		return append(dst, '0'), nil
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		dst = append(dst, '-')
	}
	// b is d[.ddd]e±XX
	epos := bytes.IndexByte(b, 'e')
	mant, expText := b[:epos], b[epos+1:]
	exp, _ := strconv.Atoi(string(expText))
	var digits [24]byte
	nd := 0
	for _, c := range mant {
		if c != '.' {
			digits[nd] = c
			nd++
		}
	}
	k := nd
	n := exp + 1 // position of the decimal point relative to the digits
	d := digits[:nd]
	switch {
	case k <= n && n <= 21:
		dst = append(dst, d...)
		for i := 0; i < n-k; i++ {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, d[:n]...)
		dst = append(dst, '.')
		dst = append(dst, d[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for i := 0; i < -n; i++ {
			dst = append(dst, '0')
		}
		dst = append(dst, d...)
	default:
		dst = append(dst, d[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst, nil
}

// appendNumber canonicalizes a JSON number literal: it is read as an
// IEEE-754 double and written in the JCS form. A literal without a fraction
// or exponent (an integer literal) whose magnitude exceeds 2^53−1 is
// accepted only when it already is the JCS form of a double, so that no
// digit is lost (9007199254740993 is an error; 100000000000000000000, the
// JCS form of the double 1e20, is not).
func appendNumber(dst []byte, lit string) ([]byte, error) {
	if !isJSONNumber(lit) {
		return nil, errorf("%w: number %q", ErrInvalidJSON, strings.Clone(lit))
	}
	if isInt := !bytesContainsAny(lit, ".eE"); isInt {
		v, err := strconv.ParseInt(lit, 10, 64)
		if err == nil && v >= -MaxSafeInteger && v <= MaxSafeInteger {
			return strconv.AppendInt(dst, v, 10), nil
		}
		f, ferr := strconv.ParseFloat(lit, 64)
		if ferr != nil || math.IsInf(f, 0) {
			return nil, errorf("%s: %w", strings.Clone(lit), ErrUnsafeInteger)
		}
		start := len(dst)
		dst, _ = appendFloat(dst, f)
		if string(dst[start:]) != lit {
			return nil, errorf("%s: %w", strings.Clone(lit), ErrUnsafeInteger)
		}
		return dst, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return nil, errorf("number %q: %w", strings.Clone(lit), err)
	}
	return appendFloat(dst, f)
}

// isJSONNumber reports whether s is a number literal of the JSON grammar.
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && '1' <= s[i] && s[i] <= '9':
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
	}
	return i == len(s)
}

func bytesContainsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}
