package rabbitsub

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// An AMQP 0-9-1 field table: the reader below accepts exactly what
// amqp091-go's reader (read.go, v1.16.0) accepts when clientLimits apply,
// quirks included (inside an array, io.EOF ends the array), so that the
// guard recognises every header table that would make the client close its
// connection. The writer writes what amqp091-go writes, keys sorted.

// amqp091-go's limits: deeper nesting or more entries in one table or array
// is a syntax error that closes the connection.
const (
	clientMaxDepth   = 32
	clientMaxEntries = 8192
	// envelopeMaxDepth bounds the nesting ParseDeadLetter decodes, so that
	// a crafted envelope cannot exhaust the stack.
	envelopeMaxDepth = 4096
	// readAllocChunk is amqp091-go's: a length field is believed only as
	// the bytes arrive, in chunks of this size.
	readAllocChunk = 64 * 1024
)

// tableLimits bound what readTable accepts; entries 0: no limit.
type tableLimits struct{ depth, entries int }

func clientLimits() tableLimits   { return tableLimits{depth: clientMaxDepth, entries: clientMaxEntries} }
func envelopeLimits() tableLimits { return tableLimits{depth: envelopeMaxDepth} }

// tableError says why a table cannot be read; never io.EOF, which the
// array reader treats as the end of an array.
type tableError struct{ msg string }

func (e *tableError) Error() string { return e.msg }

var errSyntax = &tableError{"invalid field or value in the header table"}

// describeTableError turns a reader error into a reason for people.
func describeTableError(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "header table truncated"
	}
	return err.Error()
}

// decodeTable decodes raw, one table (its 4-byte length first) and nothing
// after it. Its error is a reason for people ([describeTableError]),
// without the package's name.
func decodeTable(raw []byte, lim tableLimits) (amqp.Table, error) {
	r := bytes.NewReader(raw)
	t, err := readTable(r, lim)
	switch {
	case err != nil:
		return nil, errors.New(describeTableError(err))
	case r.Len() != 0:
		return nil, errors.New("bytes after the table")
	}
	return t, nil
}

// readTable reads a table (its 4-byte length first) from r.
func readTable(r io.Reader, lim tableLimits) (amqp.Table, error) {
	return readTableDepth(r, 0, lim)
}

func readTableDepth(r io.Reader, depth int, lim tableLimits) (amqp.Table, error) {
	if depth > lim.depth {
		return nil, &tableError{fmt.Sprintf("header tables nested deeper than %d levels", lim.depth)}
	}
	s, err := readLongstr(r)
	if err != nil {
		return nil, err
	}
	nested := bytes.NewBuffer(s)
	table := amqp.Table{}
	for nested.Len() > 0 {
		key, err := readShortstr(nested)
		if err != nil {
			return nil, err
		}
		v, err := readField(nested, depth, lim)
		if err != nil {
			return nil, err
		}
		if lim.entries > 0 && len(table) >= lim.entries {
			return nil, &tableError{fmt.Sprintf("more than %d entries in one header table", lim.entries)}
		}
		table[string(key)] = v
	}
	return table, nil
}

func readArray(r io.Reader, depth int, lim tableLimits) ([]any, error) {
	if depth > lim.depth {
		return nil, &tableError{fmt.Sprintf("header arrays nested deeper than %d levels", lim.depth)}
	}
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > math.MaxInt32 {
		return nil, errSyntax
	}
	lr := &io.LimitedReader{R: r, N: int64(n)}
	var arr []any
	for {
		v, err := readField(lr, depth, lim)
		if err == io.EOF {
			return arr, nil
		}
		if err != nil {
			return nil, err
		}
		if lim.entries > 0 && len(arr) >= lim.entries {
			return nil, &tableError{fmt.Sprintf("more than %d elements in one header array", lim.entries)}
		}
		arr = append(arr, v)
	}
}

func readField(r io.Reader, depth int, lim tableLimits) (any, error) {
	var b [9]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return nil, err
	}
	fixed := func(n int) ([]byte, error) {
		if _, err := io.ReadFull(r, b[:n]); err != nil {
			return nil, err
		}
		return b[:n], nil
	}
	switch typ := b[0]; typ {
	case 't':
		v, err := fixed(1)
		if err != nil {
			return nil, err
		}
		return v[0] != 0, nil
	case 'B':
		v, err := fixed(1)
		if err != nil {
			return nil, err
		}
		return v[0], nil
	case 'b':
		v, err := fixed(1)
		if err != nil {
			return nil, err
		}
		return int8(v[0]), nil
	case 's':
		v, err := fixed(2)
		if err != nil {
			return nil, err
		}
		return int16(binary.BigEndian.Uint16(v)), nil
	case 'u':
		v, err := fixed(2)
		if err != nil {
			return nil, err
		}
		return binary.BigEndian.Uint16(v), nil
	case 'I':
		v, err := fixed(4)
		if err != nil {
			return nil, err
		}
		return int32(binary.BigEndian.Uint32(v)), nil
	case 'i':
		v, err := fixed(4)
		if err != nil {
			return nil, err
		}
		return binary.BigEndian.Uint32(v), nil
	case 'l':
		v, err := fixed(8)
		if err != nil {
			return nil, err
		}
		return int64(binary.BigEndian.Uint64(v)), nil
	case 'f':
		v, err := fixed(4)
		if err != nil {
			return nil, err
		}
		return math.Float32frombits(binary.BigEndian.Uint32(v)), nil
	case 'd':
		v, err := fixed(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(v)), nil
	case 'D':
		scale, err := fixed(1)
		if err != nil {
			return nil, err
		}
		s := scale[0]
		v, err := fixed(4)
		if err != nil {
			return nil, err
		}
		return amqp.Decimal{Scale: s, Value: int32(binary.BigEndian.Uint32(v))}, nil
	case 'T':
		v, err := fixed(8)
		if err != nil {
			return nil, err
		}
		return time.Unix(int64(binary.BigEndian.Uint64(v)), 0), nil
	case 'S':
		s, err := readLongstr(r)
		if err != nil {
			return nil, err
		}
		return string(s), nil
	case 'x':
		v, err := fixed(4)
		if err != nil {
			return nil, err
		}
		n := int32(binary.BigEndian.Uint32(v))
		if n < 0 {
			return nil, errSyntax
		}
		return readBytes(r, int64(n))
	case 'A':
		return readArray(r, depth+1, lim)
	case 'F':
		return readTableDepth(r, depth+1, lim)
	case 'V':
		return nil, nil
	default:
		return nil, &tableError{fmt.Sprintf("header field of unknown type %q", typ)}
	}
}

func readShortstr(r io.Reader) ([]byte, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	return readBytes(r, int64(n[0]))
}

func readLongstr(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > math.MaxInt32 {
		return nil, errSyntax
	}
	return readBytes(r, int64(size))
}

// readBytes reads n bytes in chunks, as amqp091-go does: the chunking
// decides whether data ending early is io.EOF or io.ErrUnexpectedEOF.
func readBytes(r io.Reader, n int64) ([]byte, error) {
	buf := make([]byte, 0, min(n, readAllocChunk))
	for int64(len(buf)) < n {
		chunk := int(min(n-int64(len(buf)), readAllocChunk))
		old := len(buf)
		buf = append(buf, make([]byte, chunk)...)
		if _, err := io.ReadFull(r, buf[old:]); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// appendTable appends t as an AMQP field table (4-byte length first), with
// its keys sorted, to b. Values are of the types amqp091-go reads and
// writes; other types are an error.
func appendTable(b []byte, t amqp.Table) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var err error
	for _, k := range keys {
		if len(k) > 255 {
			return nil, fmt.Errorf("header name %.32q... longer than 255 bytes", k)
		}
		b = append(b, byte(len(k)))
		b = append(b, k...)
		if b, err = appendField(b, t[k]); err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
	}
	return putLength(b, start)
}

func putLength(b []byte, start int) ([]byte, error) {
	n := len(b) - start - 4
	if n > math.MaxInt32 {
		return nil, errors.New("header table longer than 2 GiB")
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

func appendField(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case bool:
		if v {
			return append(b, 't', 1), nil
		}
		return append(b, 't', 0), nil
	case byte:
		return append(b, 'B', v), nil
	case int8:
		return append(b, 'b', byte(v)), nil
	case int16:
		return binary.BigEndian.AppendUint16(append(b, 's'), uint16(v)), nil
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, 'u'), v), nil
	case int:
		return binary.BigEndian.AppendUint32(append(b, 'I'), uint32(v)), nil
	case int32:
		return binary.BigEndian.AppendUint32(append(b, 'I'), uint32(v)), nil
	case uint32:
		return binary.BigEndian.AppendUint32(append(b, 'i'), v), nil
	case int64:
		return binary.BigEndian.AppendUint64(append(b, 'l'), uint64(v)), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(b, 'f'), math.Float32bits(v)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, 'd'), math.Float64bits(v)), nil
	case amqp.Decimal:
		return binary.BigEndian.AppendUint32(append(b, 'D', v.Scale), uint32(v.Value)), nil
	case time.Time:
		return binary.BigEndian.AppendUint64(append(b, 'T'), uint64(v.Unix())), nil
	case string:
		if int64(len(v)) > math.MaxInt32 {
			return nil, errors.New("string longer than 2 GiB")
		}
		b = binary.BigEndian.AppendUint32(append(b, 'S'), uint32(len(v)))
		return append(b, v...), nil
	case []byte:
		if int64(len(v)) > math.MaxInt32 {
			return nil, errors.New("byte array longer than 2 GiB")
		}
		b = binary.BigEndian.AppendUint32(append(b, 'x'), uint32(len(v)))
		return append(b, v...), nil
	case []any:
		b = append(b, 'A')
		start := len(b)
		b = append(b, 0, 0, 0, 0)
		var err error
		for _, e := range v {
			if b, err = appendField(b, e); err != nil {
				return nil, err
			}
		}
		return putLength(b, start)
	case amqp.Table:
		return appendTable(append(b, 'F'), v)
	case nil:
		return append(b, 'V'), nil
	}
	return nil, fmt.Errorf("type %T cannot be encoded in an AMQP table", v)
}
