package forge

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrInvalidJSON is returned by [CanonicalJSON] for text that is not one
// well-formed JSON value.
var ErrInvalidJSON = errors.New("forge: invalid JSON")

// CanonicalJSON returns the RFC 8785 canonical form of one JSON text, with
// the number rules of [Canonical]: an integer literal (no fraction, no
// exponent) beyond ±(2^53−1) is an error, other numbers are read as IEEE-754
// doubles. Duplicate object keys, lone surrogates and invalid UTF-8 are
// errors.
func CanonicalJSON(data []byte) ([]byte, error) {
	return AppendCanonicalJSON(nil, data)
}

// AppendCanonicalJSON appends the canonical form of the JSON text data to dst.
func AppendCanonicalJSON(dst []byte, data []byte) ([]byte, error) {
	out, err := appendCanonicalJSON(dst, data, 0)
	if err != nil {
		return nil, errorf("JSON text: %w", err)
	}
	return out, nil
}

// appendCanonicalJSON appends the canonical form of data, a value nested
// inside depth arrays and objects.
func appendCanonicalJSON(dst []byte, data []byte, depth int) ([]byte, error) {
	p := jcsParser{data: data}
	p.skipSpace()
	out, err := p.value(dst, depth)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(data) {
		return nil, errorf("%w: trailing data at offset %d", ErrInvalidJSON, p.pos)
	}
	return out, nil
}

type jcsParser struct {
	data []byte
	pos  int
}

// member locates one object member inside the output buffer.
type member struct {
	key        []byte // canonical (escaped) key, without quotes, in dst
	start, end int    // whole "key":value in dst
}

func (p *jcsParser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jcsParser) errorf(format string, args ...any) error {
	return errorf("%w: %s at offset %d", ErrInvalidJSON, fmt.Sprintf(format, args...), p.pos)
}

// value reads one value inside depth arrays and objects.
func (p *jcsParser) value(dst []byte, depth int) ([]byte, error) {
	if p.pos >= len(p.data) {
		return nil, p.errorf("unexpected end")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(dst, depth)
	case c == '[':
		return p.array(dst, depth)
	case c == '"':
		return p.str(dst)
	case c == 't':
		return p.literal(dst, "true")
	case c == 'f':
		return p.literal(dst, "false")
	case c == 'n':
		return p.literal(dst, "null")
	case c == '-' || ('0' <= c && c <= '9'):
		return p.number(dst)
	default:
		return nil, p.errorf("unexpected character %q", c)
	}
}

func (p *jcsParser) literal(dst []byte, lit string) ([]byte, error) {
	if len(p.data)-p.pos < len(lit) || string(p.data[p.pos:p.pos+len(lit)]) != lit {
		return nil, p.errorf("invalid literal")
	}
	p.pos += len(lit)
	return append(dst, lit...), nil
}

func (p *jcsParser) number(dst []byte) ([]byte, error) {
	start := p.pos
	d := p.data
	i := p.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	default:
		p.pos = i
		return nil, p.errorf("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return nil, p.errorf("invalid number")
		}
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return nil, p.errorf("invalid number")
		}
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
	}
	p.pos = i
	out, err := appendNumber(dst, string(d[start:i]))
	if err != nil {
		return nil, err
	}
	return out, nil
}

// str reads a JSON string and writes it in the JCS form.
func (p *jcsParser) str(dst []byte) ([]byte, error) {
	d := p.data
	i := p.pos + 1
	dst = append(dst, '"')
	for {
		if i >= len(d) {
			p.pos = i
			return nil, p.errorf("unterminated string")
		}
		c := d[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return append(dst, '"'), nil
		case c < 0x20:
			p.pos = i
			return nil, p.errorf("control character in string")
		case c == '\\':
			if i+1 >= len(d) {
				p.pos = i
				return nil, p.errorf("unterminated escape")
			}
			var r rune
			switch e := d[i+1]; e {
			case '"', '\\', '/':
				r = rune(e)
				i += 2
			case 'b':
				r, i = '\b', i+2
			case 'f':
				r, i = '\f', i+2
			case 'n':
				r, i = '\n', i+2
			case 'r':
				r, i = '\r', i+2
			case 't':
				r, i = '\t', i+2
			case 'u':
				u1, ok := hex4(d, i+2)
				if !ok {
					p.pos = i
					return nil, p.errorf("invalid \\u escape")
				}
				i += 6
				r = rune(u1)
				if utf16.IsSurrogate(r) {
					u2, ok := uint16(0), false
					if r < 0xdc00 && i+1 < len(d) && d[i] == '\\' && d[i+1] == 'u' {
						u2, ok = hex4(d, i+2)
					}
					r2 := utf16.DecodeRune(r, rune(u2))
					if !ok || r2 == utf8.RuneError {
						p.pos = i
						return nil, p.errorf("lone surrogate \\u%04x", u1)
					}
					r = r2
					i += 6
				}
			default:
				p.pos = i
				return nil, p.errorf("invalid escape \\%c", e)
			}
			dst = appendEscapedRune(dst, r)
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 {
				p.pos = i
				return nil, errorf("%w at offset %d", ErrInvalidUTF8, i)
			}
			dst = append(dst, d[i:i+size]...)
			i += size
		}
	}
}

func hex4(d []byte, i int) (uint16, bool) {
	if i+4 > len(d) {
		return 0, false
	}
	var v uint16
	for _, c := range d[i : i+4] {
		h, ok := hexVal(c)
		if !ok {
			return 0, false
		}
		v = v<<4 | uint16(h)
	}
	return v, true
}

// appendEscapedRune writes r as it appears inside a JCS string.
func appendEscapedRune(dst []byte, r rune) []byte {
	switch r {
	case '"', '\\':
		return append(dst, '\\', byte(r))
	case '\b':
		return append(dst, '\\', 'b')
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\f':
		return append(dst, '\\', 'f')
	case '\r':
		return append(dst, '\\', 'r')
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
	}
	return utf8.AppendRune(dst, r)
}

func (p *jcsParser) array(dst []byte, depth int) ([]byte, error) {
	if depth >= MaxDepth {
		return nil, errorf("%w (JSON text at offset %d)", ErrTooDeep, p.pos)
	}
	p.pos++ // '['
	dst = append(dst, '[')
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return append(dst, ']'), nil
	}
	for {
		var err error
		p.skipSpace()
		if dst, err = p.value(dst, depth+1); err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errorf("unterminated array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
			dst = append(dst, ',')
		case ']':
			p.pos++
			return append(dst, ']'), nil
		default:
			return nil, p.errorf("expected ',' or ']'")
		}
	}
}

// object writes the members in input order, then reorders them in place
// by their keys' UTF-16 code units.
func (p *jcsParser) object(dst []byte, depth int) ([]byte, error) {
	if depth >= MaxDepth {
		return nil, errorf("%w (JSON text at offset %d)", ErrTooDeep, p.pos)
	}
	p.pos++ // '{'
	dst = append(dst, '{')
	base := len(dst)
	var small [8]member
	members := small[:0]
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return append(dst, '}'), nil
	}
	for {
		var err error
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.errorf("expected object key")
		}
		start := len(dst)
		if dst, err = p.str(dst); err != nil {
			return nil, err
		}
		keyEnd := len(dst)
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.errorf("expected ':'")
		}
		p.pos++
		dst = append(dst, ':')
		p.skipSpace()
		if dst, err = p.value(dst, depth+1); err != nil {
			return nil, err
		}
		members = append(members, member{key: dst[start+1 : keyEnd-1], start: start, end: len(dst)})
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errorf("unterminated object")
		}
		if c := p.data[p.pos]; c == ',' {
			p.pos++
			dst = append(dst, ',')
			continue
		} else if c != '}' {
			return nil, p.errorf("expected ',' or '}'")
		}
		p.pos++
		break
	}
	// dst may have been reallocated while members were appended: rebase keys.
	for i := range members {
		m := &members[i]
		m.key = dst[m.start+1 : m.start+1+len(m.key)]
	}
	if len(members) > 1 {
		sorted := slices.IsSortedFunc(members, cmpMembers)
		if !sorted {
			slices.SortFunc(members, cmpMembers)
		}
		for i := 1; i < len(members); i++ {
			if cmpMembers(members[i-1], members[i]) == 0 {
				return nil, errorf("%w: duplicate object key \"%s\"", ErrInvalidJSON, members[i].key)
			}
		}
		if !sorted {
			// Append the members in order after the current end, then move
			// them over the unsorted region.
			end := len(dst)
			for i, m := range members {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, dst[m.start:m.end]...)
			}
			n := copy(dst[base:], dst[end:])
			dst = dst[:base+n]
		}
	}
	return append(dst, '}'), nil
}

func cmpMembers(a, b member) int { return compareUTF16(a.key, b.key) }

// compareUTF16 orders two canonical (JCS-escaped) strings by the UTF-16
// code units of their decoded values, as RFC 8785 sorts object keys.
func compareUTF16(a, b []byte) int {
	for len(a) > 0 && len(b) > 0 {
		ra, na := nextCanonRune(a)
		rb, nb := nextCanonRune(b)
		a, b = a[na:], b[nb:]
		if ra == rb {
			continue
		}
		return cmpUnit(ra) - cmpUnit(rb)
	}
	return len(a) - len(b)
}

// cmpUnit maps a code point to a sort key that orders like UTF-16: code
// points above U+FFFF sort by their high surrogate (D800..DBFF), i.e.
// before U+E000..U+FFFF; among themselves they keep code point order.
func cmpUnit(r rune) int {
	if r > 0xffff {
		return 0xd800<<16 + int(r-0x10000)
	}
	return int(r) << 16
}

// nextCanonRune decodes the first character of a JCS-escaped string.
func nextCanonRune(s []byte) (rune, int) {
	if s[0] != '\\' {
		if s[0] < utf8.RuneSelf {
			return rune(s[0]), 1
		}
		return utf8.DecodeRune(s)
	}
	switch s[1] {
	case 'b':
		return '\b', 2
	case 't':
		return '\t', 2
	case 'n':
		return '\n', 2
	case 'f':
		return '\f', 2
	case 'r':
		return '\r', 2
	case 'u':
		v, _ := hex4(s, 2)
		return rune(v), 6
	}
	return rune(s[1]), 2 // '"' or '\\'
}
