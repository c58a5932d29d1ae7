package forge

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// ErrPythonType is returned for a value that has no Python-compatible
// representation (supported: string, integers of any size, floats, bool,
// nil, [uuid.UUID]).
var ErrPythonType = errors.New("forge: no Python-compatible repr (want string, int, *big.Int, float, bool or nil)")

// PythonName returns the name that uuid-forge 0.1.x (Python) hashes with
// UUIDv5: "|".join([entity] + ["salt:"+salt if salt] + [normalized if
// non-empty]), where normalized = "|".join([repr(a) for a in args] +
// [f"{k}={repr(v)}" for k in sorted(kwargs)]).
func PythonName(entity, salt string, args []any, kwargs map[string]any) ([]byte, error) {
	if !utf8.ValidString(entity) {
		return nil, errorf("python entity type %q: %w", entity, ErrInvalidUTF8)
	}
	if !utf8.ValidString(salt) {
		return nil, errorf("python salt: %w", ErrInvalidUTF8)
	}
	var norm []byte
	n := 0
	var err error
	for i, a := range args {
		if n > 0 {
			norm = append(norm, '|')
		}
		if norm, err = AppendPythonRepr(norm, a); err != nil {
			return nil, errorf("python arg %d: %w", i, err)
		}
		n++
	}
	keys := make([]string, 0, len(kwargs))
	for k := range kwargs {
		keys = append(keys, k)
	}
	slices.Sort(keys) // Python sorts str by code point; UTF-8 byte order is the same
	for _, k := range keys {
		if !utf8.ValidString(k) {
			return nil, errorf("python kwarg %q: %w", k, ErrInvalidUTF8)
		}
		if n > 0 {
			norm = append(norm, '|')
		}
		norm = append(norm, k...)
		norm = append(norm, '=')
		if norm, err = AppendPythonRepr(norm, kwargs[k]); err != nil {
			return nil, errorf("python kwarg %s: %w", k, err)
		}
		n++
	}
	name := []byte(entity)
	if salt != "" {
		name = append(name, "|salt:"...)
		name = append(name, salt...)
	}
	if len(norm) > 0 {
		name = append(name, '|')
		name = append(name, norm...)
	}
	return name, nil
}

// AppendPythonRepr appends Python's repr() of v to dst. Integers of any
// size are accepted as Go integers, *big.Int, big.Int or a decimal
// json.Number ("123456789012345678901234567890"; a json.Number with a
// fraction or exponent is a float); floats follow Python's shortest repr
// ('1e+16', '0.0001', '1.0', 'inf', 'nan'); a string may carry lone
// surrogates as their WTF-8 bytes (ED A0..BF xx), which repr escapes.
func AppendPythonRepr(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, "None"...), nil
	case string:
		return appendPyStr(dst, x)
	case bool:
		if x {
			return append(dst, "True"...), nil
		}
		return append(dst, "False"...), nil
	case int:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	case uint:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(dst, x, 10), nil
	case *big.Int:
		if x == nil {
			return append(dst, "None"...), nil
		}
		return x.Append(dst, 10), nil
	case big.Int:
		return x.Append(dst, 10), nil
	case float64:
		return appendPyFloat(dst, x), nil
	case float32:
		return appendPyFloat(dst, float64(x)), nil
	case uuid.UUID:
		dst = append(dst, "UUID('"...)
		dst = append(dst, x.String()...)
		return append(dst, "')"...), nil
	case json.Number:
		s := string(x)
		if b, ok := new(big.Int).SetString(s, 10); ok {
			return b.Append(dst, 10), nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, errorf("number %q: %w", s, err)
		}
		return appendPyFloat(dst, f), nil
	}
	return nil, errorf("%T: %w", v, ErrPythonType)
}

// appendPyStr writes Python's repr of a str.
func appendPyStr(dst []byte, s string) ([]byte, error) {
	quote := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		quote = '"'
	}
	dst = append(dst, quote)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			// A Python str may hold a lone surrogate; Go carries it as its
			// WTF-8 bytes (ED A0..BF 80..BF). Anything else is invalid.
			if i+2 < len(s) && s[i] == 0xed && s[i+1]&0xe0 == 0xa0 && s[i+2]&0xc0 == 0x80 {
				r = 0xd000 | rune(s[i+1]&0x3f)<<6 | rune(s[i+2]&0x3f)
				dst = append(dst, '\\', 'u')
				dst = appendHex(dst, uint32(r), 4)
				i += 3
				continue
			}
			return nil, errorf("%q at byte %d: %w", s, i, ErrInvalidUTF8)
		}
		i += size
		switch {
		case r == rune(quote) || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r < ' ' || r == 0x7f:
			dst = append(dst, '\\', 'x', hexDigits[r>>4], hexDigits[r&0xf])
		case r < utf8.RuneSelf:
			dst = append(dst, byte(r))
		case pyPrintable(r):
			dst = utf8.AppendRune(dst, r)
		case r <= 0xff:
			dst = append(dst, '\\', 'x', hexDigits[r>>4], hexDigits[r&0xf])
		case r <= 0xffff:
			dst = append(dst, '\\', 'u')
			dst = appendHex(dst, uint32(r), 4)
		default:
			dst = append(dst, '\\', 'U')
			dst = appendHex(dst, uint32(r), 8)
		}
	}
	return append(dst, quote), nil
}

func appendHex(dst []byte, v uint32, width int) []byte {
	for i := width - 1; i >= 0; i-- {
		dst = append(dst, hexDigits[(v>>(4*uint(i)))&0xf])
	}
	return dst
}

// pyPrintable mirrors Python's str.isprintable for one character: letters,
// marks, numbers, punctuation and symbols are printable; separators
// (Zs, Zl, Zp) other than ASCII space and "other" (Cc, Cf, Cs, Co, Cn) are not.
func pyPrintable(r rune) bool {
	if r == ' ' {
		return true
	}
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S)
}

// appendPyFloat writes Python's repr of a float: the shortest round-trip
// digits, exponent notation when the decimal exponent is < -4 or >= 16,
// and a ".0" suffix for integral values in positional notation.
func appendPyFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "nan"...)
	case math.IsInf(f, 1):
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		return append(dst, "-inf"...)
	}
	if f == 0 {
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	if b[0] == '-' {
		dst = append(dst, '-')
		b = b[1:]
	}
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
	d := digits[:nd]
	decpt := exp + 1
	if decpt <= -4 || decpt > 16 {
		dst = append(dst, d[0])
		if nd > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		e := decpt - 1
		if e < 0 {
			dst = append(dst, '-')
			e = -e
		} else {
			dst = append(dst, '+')
		}
		if e < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(e), 10)
	}
	switch {
	case decpt <= 0:
		dst = append(dst, '0', '.')
		for i := 0; i < -decpt; i++ {
			dst = append(dst, '0')
		}
		dst = append(dst, d...)
	case decpt >= nd:
		dst = append(dst, d...)
		for i := 0; i < decpt-nd; i++ {
			dst = append(dst, '0')
		}
		dst = append(dst, '.', '0')
	default:
		dst = append(dst, d[:decpt]...)
		dst = append(dst, '.')
		dst = append(dst, d[decpt:]...)
	}
	return dst
}
