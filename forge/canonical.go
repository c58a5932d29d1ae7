package forge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
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
	ErrUnsafeInteger = errors.New("integer magnitude exceeds 2^53-1; pass it as a string")
	// ErrNonFinite is returned for NaN and ±Inf, which JSON cannot represent.
	ErrNonFinite = errors.New("NaN and Inf have no JSON form")
	// ErrInvalidUTF8 is returned for a string that is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("string is not valid UTF-8")
	// ErrUnsupported is returned for a value that cannot be encoded as JSON
	// (a channel, a function, a complex number, a cyclic value...).
	ErrUnsupported = errors.New("value cannot be encoded as JSON")
)

// Canonical returns the canonical name of parts: the RFC 8785 (JCS)
// serialization, in UTF-8, of the JSON array of the parts in order. It is
// the byte string that the default and keyed schemes hash; see SPEC.md.
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
			return nil, fmt.Errorf("forge: part %d (%T): %w", i, p, err)
		}
	}
	return append(dst, ']'), nil
}

// appendValue encodes one part. Simple kinds are written directly; anything
// else goes through encoding/json and is then canonicalized.
func appendValue(dst []byte, v any) ([]byte, error) {
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
		// encoding/json formats float32 with 32-bit precision; JCS works on
		// the value as a double, so widen through the shortest 32-bit text.
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		return appendFloat(dst, f)
	case uuid.UUID:
		return appendUUID(dst, x), nil
	case *uuid.UUID:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendUUID(dst, *x), nil
	case time.Time:
		return appendString(dst, x.UTC().Format(time.RFC3339Nano))
	case *time.Time:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return appendString(dst, x.UTC().Format(time.RFC3339Nano))
	case []byte:
		if x == nil {
			return append(dst, "null"...), nil
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, x)
		return append(dst, '"'), nil
	case json.Number:
		return appendNumber(dst, string(x))
	case *big.Int:
		if x == nil {
			return append(dst, "null"...), nil
		}
		if !x.IsInt64() {
			return nil, ErrUnsafeInteger
		}
		return appendInt(dst, x.Int64())
	}
	return appendReflect(dst, v)
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
		return nil, fmt.Errorf("%d: %w", v, ErrUnsafeInteger)
	}
	return strconv.AppendInt(dst, v, 10), nil
}

func appendUint(dst []byte, v uint64) ([]byte, error) {
	if v > MaxSafeInteger {
		return nil, fmt.Errorf("%d: %w", v, ErrUnsafeInteger)
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
			return nil, fmt.Errorf("%q at byte %d: %w", s, i, ErrInvalidUTF8)
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
		return nil, fmt.Errorf("%v: %w", f, ErrNonFinite)
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

// appendNumber canonicalizes a JSON number literal. A literal without a
// fraction or exponent is an integer and must be safe; any other is parsed
// as an IEEE-754 double and written in the JCS form.
func appendNumber(dst []byte, lit string) ([]byte, error) {
	isInt := lit != "" && !bytesContainsAny(lit, ".eE")
	if isInt {
		v, err := strconv.ParseInt(lit, 10, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
				return nil, fmt.Errorf("%s: %w", lit, ErrUnsafeInteger)
			}
			return nil, fmt.Errorf("number %q: %w", lit, err)
		}
		if v == 0 {
			return append(dst, '0'), nil
		}
		return appendInt(dst, v)
	}
	if !json.Valid([]byte(lit)) {
		return nil, fmt.Errorf("invalid JSON number %q", lit)
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return nil, fmt.Errorf("number %q: %w", lit, err)
	}
	return appendFloat(dst, f)
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

// appendReflect handles everything that is not a simple part: it asks
// encoding/json for the value and canonicalizes the result.
func appendReflect(dst []byte, v any) ([]byte, error) {
	if err := checkStrings(reflect.ValueOf(v), 0); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		var ue *json.UnsupportedTypeError
		var uv *json.UnsupportedValueError
		if errors.As(err, &ue) || errors.As(err, &uv) {
			if uv != nil && (uv.Str == "NaN" || uv.Str == "+Inf" || uv.Str == "-Inf") {
				return nil, fmt.Errorf("%s: %w", uv.Str, ErrNonFinite)
			}
			return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		return nil, err
	}
	return AppendCanonicalJSON(dst, raw)
}

// checkStrings rejects invalid UTF-8 in Go strings that encoding/json would
// otherwise silently replace with U+FFFD. It descends only through plain
// data (maps, slices, arrays, pointers, exported struct fields); values
// with their own MarshalJSON are checked after marshalling.
func checkStrings(v reflect.Value, depth int) error {
	if depth > 64 || !v.IsValid() {
		return nil
	}
	if v.CanInterface() {
		if _, ok := v.Interface().(json.Marshaler); ok {
			return nil
		}
	}
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return fmt.Errorf("%q: %w", v.String(), ErrInvalidUTF8)
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return checkStrings(v.Elem(), depth+1)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return nil
		}
		for i := 0; i < v.Len(); i++ {
			if err := checkStrings(v.Index(i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if err := checkStrings(it.Key(), depth+1); err != nil {
				return err
			}
			if err := checkStrings(it.Value(), depth+1); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < v.NumField(); i++ {
			if t.Field(i).IsExported() || t.Field(i).Anonymous {
				if err := checkStrings(v.Field(i), depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// CanonicalJSON returns the RFC 8785 canonical form of one JSON text, with
// the number rules of [Canonical] (unsafe integers, duplicate object keys
// and invalid UTF-8 are errors).
func CanonicalJSON(data []byte) ([]byte, error) {
	return AppendCanonicalJSON(nil, data)
}

// AppendCanonicalJSON appends the canonical form of the JSON text data to dst.
func AppendCanonicalJSON(dst []byte, data []byte) ([]byte, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("forge: JSON text: %w", ErrInvalidUTF8)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var err error
	dst, err = canonTokens(dst, dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("forge: JSON text: trailing data after the value")
	}
	return dst, nil
}

const maxDepth = 1000

func canonTokens(dst []byte, dec *json.Decoder, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errors.New("forge: JSON text: nesting too deep")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("forge: JSON text: %w", err)
	}
	switch t := tok.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		return strconv.AppendBool(dst, t), nil
	case string:
		return appendString(dst, t)
	case json.Number:
		return appendNumber(dst, string(t))
	case json.Delim:
		switch t {
		case '[':
			dst = append(dst, '[')
			first := true
			for dec.More() {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				if dst, err = canonTokens(dst, dec, depth+1); err != nil {
					return nil, err
				}
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("forge: JSON text: %w", err)
			}
			return append(dst, ']'), nil
		case '{':
			type member struct {
				key   string
				key16 []uint16
				val   []byte
			}
			var members []member
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("forge: JSON text: %w", err)
				}
				key, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("forge: JSON text: object key %v is not a string", kt)
				}
				val, err := canonTokens(nil, dec, depth+1)
				if err != nil {
					return nil, err
				}
				members = append(members, member{key, utf16.Encode([]rune(key)), val})
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("forge: JSON text: %w", err)
			}
			slices.SortFunc(members, func(a, b member) int { return slices.Compare(a.key16, b.key16) })
			dst = append(dst, '{')
			for i, m := range members {
				if i > 0 {
					if slices.Equal(members[i-1].key16, m.key16) {
						return nil, fmt.Errorf("forge: JSON text: duplicate object key %q", m.key)
					}
					dst = append(dst, ',')
				}
				if dst, err = appendString(dst, m.key); err != nil {
					return nil, err
				}
				dst = append(dst, ':')
				dst = append(dst, m.val...)
			}
			return append(dst, '}'), nil
		}
	}
	return nil, fmt.Errorf("forge: JSON text: unexpected token %v", tok)
}
