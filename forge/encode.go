package forge

import (
	"cmp"
	"encoding"
	"encoding/base64"
	"encoding/json"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// This file encodes any Go value as its canonical JSON directly, with the
// field rules of encoding/json (names, tags, omitempty, omitzero, string,
// embedding, MarshalJSON, MarshalText, map keys), so that a struct's name
// is what encoding/json would give once canonicalized, except where SPEC.md
// says otherwise:
//
//   - float32 values are widened exactly to float64 (encoding/json writes
//     their shortest 32-bit text, which is another double);
//   - a nil []byte is the empty string "", like an empty one (encoding/json:
//     null);
//   - time.Time is written in UTC, as a part is (encoding/json keeps the
//     zone offset), and big.Int as an integer even when not addressable;
//   - invalid UTF-8 anywhere, including MarshalText and MarshalJSON output
//     and map keys, is an error (encoding/json replaces it with U+FFFD);
//   - integers beyond ±(2^53−1) are an error, except as text (map keys and
//     fields tagged ",string");
//   - values nested deeper than MaxDepth, and cyclic values, are an error.
//
// Encoding the value once, instead of running encoding/json and parsing its
// output, is also what lets every string be checked at every depth.

// MaxDepth is the deepest nesting of arrays and objects that a canonical
// name may have, the array of parts counting as one level; [CanonicalJSON]
// applies it to its input. A deeper value is an error ([ErrTooDeep]), and
// so is a Go value that refers to itself (a cycle through a pointer, map,
// slice or interface) or a chain of more than MaxDepth pointers and
// interfaces, instead of a stack overflow or a hang.
const MaxDepth = 1000

var (
	timeType    = reflect.TypeFor[time.Time]()
	uuidType    = reflect.TypeFor[uuid.UUID]()
	bigIntType  = reflect.TypeFor[big.Int]()
	numberType  = reflect.TypeFor[json.Number]()
	marshalerT  = reflect.TypeFor[json.Marshaler]()
	textMarshT  = reflect.TypeFor[encoding.TextMarshaler]()
	isZeroerT   = reflect.TypeFor[interface{ IsZero() bool }]()
	structCache sync.Map // reflect.Type → *structInfo
)

// appendReflect encodes a part that is not of a simple kind.
func appendReflect(dst []byte, v any) ([]byte, error) {
	return appendReflectValue(dst, reflect.ValueOf(v), 1, 0)
}

// appendReflectValue encodes v, which is inside depth arrays and objects and
// reached through hops pointers or interfaces since the innermost of them.
func appendReflectValue(dst []byte, v reflect.Value, depth, hops int) ([]byte, error) {
	if !v.IsValid() {
		return append(dst, "null"...), nil
	}
	t := v.Type()
	switch t {
	case timeType, uuidType, bigIntType:
		if !v.CanInterface() {
			// Reached through a tagged unexported embedded field: reflect
			// cannot read it (encoding/json panics here).
			return nil, errorf("%w: %s in an unexported embedded field", ErrUnsupported, t)
		}
	}
	switch t {
	case timeType:
		tm, _ := reflect.TypeAssert[time.Time](v)
		return appendTime(dst, tm), nil
	case uuidType:
		u, _ := reflect.TypeAssert[uuid.UUID](v)
		return appendUUID(dst, u), nil
	case bigIntType:
		if v.CanAddr() {
			b, _ := reflect.TypeAssert[*big.Int](v.Addr())
			return appendBigInt(dst, b)
		}
		b, _ := reflect.TypeAssert[big.Int](v)
		return appendBigInt(dst, &b)
	case numberType:
		return appendJSONNumber(dst, json.Number(v.String()))
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		// A nil pointer is null even if its type has a MarshalJSON method
		// (as encoding/json does for pointers); otherwise the pointed-to
		// value is encoded, which calls the same methods.
		if v.IsNil() {
			return append(dst, "null"...), nil
		}
		if hops >= MaxDepth {
			return nil, errorf("%w (a chain of more than %d pointers or interfaces at %s)", ErrTooDeep, MaxDepth, t)
		}
		return appendReflectValue(dst, v.Elem(), depth, hops+1)
	}
	if m, ok := marshalerOf[json.Marshaler](v, marshalerT); ok {
		b, err := m.MarshalJSON()
		if err != nil {
			return nil, errorf("%s.MarshalJSON: %w", t, err)
		}
		out, err := appendCanonicalJSON(dst, b, depth)
		if err != nil {
			return nil, errorf("%s.MarshalJSON output: %w", t, err)
		}
		return out, nil
	}
	if m, ok := marshalerOf[encoding.TextMarshaler](v, textMarshT); ok {
		b, err := m.MarshalText()
		if err != nil {
			return nil, errorf("%s.MarshalText: %w", t, err)
		}
		out, err := appendString(dst, string(b))
		if err != nil {
			return nil, errorf("%s.MarshalText output: %w", t, err)
		}
		return out, nil
	}
	switch t.Kind() {
	case reflect.Bool:
		return strconv.AppendBool(dst, v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return appendInt(dst, v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return appendUint(dst, v.Uint())
	case reflect.Float32, reflect.Float64:
		return appendFloat(dst, v.Float()) // Float widens a float32 exactly
	case reflect.String:
		return appendString(dst, v.String())
	case reflect.Struct:
		return appendStruct(dst, v, depth)
	case reflect.Map:
		return appendMap(dst, v, depth)
	case reflect.Slice:
		if isByteSlice(t) {
			dst = append(dst, '"') // nil is "" too: a byte string has no null
			dst = base64.StdEncoding.AppendEncode(dst, v.Bytes())
			return append(dst, '"'), nil
		}
		if v.IsNil() {
			return append(dst, "null"...), nil
		}
		return appendArray(dst, v, depth)
	case reflect.Array:
		return appendArray(dst, v, depth)
	}
	return nil, errorf("%w: type %s", ErrUnsupported, t)
}

// marshalerOf returns v's method set as M (a MarshalJSON or MarshalText
// implementation), also through v's address when v is addressable, as
// encoding/json calls pointer-receiver methods.
func marshalerOf[M any](v reflect.Value, mt reflect.Type) (M, bool) {
	var zero M
	if !v.CanInterface() {
		return zero, false
	}
	if v.Type().Implements(mt) {
		return reflect.TypeAssert[M](v)
	}
	if v.CanAddr() && reflect.PointerTo(v.Type()).Implements(mt) {
		return reflect.TypeAssert[M](v.Addr())
	}
	return zero, false
}

// isByteSlice reports whether encoding/json writes t as base64.
func isByteSlice(t reflect.Type) bool {
	if t.Elem().Kind() != reflect.Uint8 {
		return false
	}
	p := reflect.PointerTo(t.Elem())
	return !p.Implements(marshalerT) && !p.Implements(textMarshT)
}

func appendBigInt(dst []byte, b *big.Int) ([]byte, error) {
	if !b.IsInt64() {
		return nil, errorf("%s: %w", b, ErrUnsafeInteger)
	}
	return appendInt(dst, b.Int64())
}

// appendJSONNumber writes a json.Number as the number it holds; the empty
// Number is 0, as encoding/json writes it.
func appendJSONNumber(dst []byte, n json.Number) ([]byte, error) {
	if n == "" {
		return append(dst, '0'), nil
	}
	return appendNumber(dst, string(n))
}

// enterContainer checks the nesting of a new array or object inside depth
// others.
func enterContainer(depth int, t reflect.Type) error {
	if depth >= MaxDepth {
		return errorf("%w (at %s)", ErrTooDeep, t)
	}
	return nil
}

func appendArray(dst []byte, v reflect.Value, depth int) ([]byte, error) {
	if err := enterContainer(depth, v.Type()); err != nil {
		return nil, err
	}
	dst = append(dst, '[')
	for i := range v.Len() {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendReflectValue(dst, v.Index(i), depth+1, 0); err != nil {
			return nil, err
		}
	}
	return append(dst, ']'), nil
}

type mapEntry struct {
	key string
	val reflect.Value
}

func appendMap(dst []byte, v reflect.Value, depth int) ([]byte, error) {
	kt := v.Type().Key()
	switch kt.Kind() {
	case reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
	default:
		if !kt.Implements(textMarshT) {
			return nil, errorf("%w: map key type %s", ErrUnsupported, kt)
		}
	}
	if v.IsNil() {
		return append(dst, "null"...), nil
	}
	if err := enterContainer(depth, v.Type()); err != nil {
		return nil, err
	}
	entries := make([]mapEntry, 0, v.Len())
	for it := v.MapRange(); it.Next(); {
		k, err := mapKey(it.Key())
		if err != nil {
			return nil, err
		}
		entries = append(entries, mapEntry{k, it.Value()})
	}
	slices.SortFunc(entries, func(a, b mapEntry) int { return compareUTF16String(a.key, b.key) })
	dst = append(dst, '{')
	for i, e := range entries {
		if i > 0 {
			if entries[i-1].key == e.key {
				return nil, errorf("%w: duplicate object key %q", ErrInvalidJSON, e.key)
			}
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendString(dst, e.key); err != nil {
			return nil, errorf("map key: %w", err)
		}
		dst = append(dst, ':')
		if dst, err = appendReflectValue(dst, e.val, depth+1, 0); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// mapKey returns the object name of a map key, as encoding/json does: a
// string as is, a TextMarshaler's text, an integer in decimal.
func mapKey(k reflect.Value) (string, error) {
	if k.Kind() == reflect.String {
		return k.String(), nil
	}
	if k.Type().Implements(textMarshT) {
		if k.Kind() == reflect.Pointer && k.IsNil() {
			return "", nil
		}
		m, _ := reflect.TypeAssert[encoding.TextMarshaler](k)
		b, err := m.MarshalText()
		if err != nil {
			return "", errorf("%s.MarshalText (map key): %w", k.Type(), err)
		}
		return string(b), nil
	}
	switch k.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(k.Int(), 10), nil
	default:
		return strconv.FormatUint(k.Uint(), 10), nil
	}
}

// compareUTF16String orders two strings by their UTF-16 code units, as
// RFC 8785 sorts object names. Invalid UTF-8 is rejected later, when the
// name is written.
func compareUTF16String(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return cmpUnit(ra) - cmpUnit(rb)
		}
		if a[:na] != b[:nb] { // invalid bytes all decode as RuneError
			return strings.Compare(a[:na], b[:nb])
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// structInfo is what a struct type encodes: its JSON fields, sorted by
// name in the canonical (UTF-16) order.
type structInfo struct {
	fields []fieldInfo
}

type fieldInfo struct {
	name      string
	prefix    []byte // the canonical "name": before the value
	index     []int
	tagged    bool
	typ       reflect.Type
	omitEmpty bool
	omitZero  bool
	isZero    func(reflect.Value) bool
	quoted    bool
}

func appendStruct(dst []byte, v reflect.Value, depth int) ([]byte, error) {
	if err := enterContainer(depth, v.Type()); err != nil {
		return nil, err
	}
	info := cachedStructInfo(v.Type())
	dst = append(dst, '{')
	first := true
fields:
	for i := range info.fields {
		f := &info.fields[i]
		fv := v
		for _, j := range f.index {
			if fv.Kind() == reflect.Pointer {
				if fv.IsNil() {
					continue fields // a field of a nil embedded pointer
				}
				fv = fv.Elem()
			}
			fv = fv.Field(j)
		}
		if f.isZero != nil && !fv.CanInterface() {
			return nil, errorf("%w: omitzero on %s in an unexported embedded field", ErrUnsupported, fv.Type())
		}
		if f.omitEmpty && isEmptyValue(fv) ||
			f.omitZero && (f.isZero == nil && fv.IsZero() || f.isZero != nil && f.isZero(fv)) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, f.prefix...)
		var err error
		if f.quoted {
			dst, err = appendQuoted(dst, fv, depth+1)
		} else {
			dst, err = appendReflectValue(dst, fv, depth+1, 0)
		}
		if err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// appendQuoted writes a field tagged ",string": the JSON text of a bool,
// number or string, inside a JSON string, as encoding/json writes it (a
// float32 widened, as everywhere). Such an integer is text, so any
// magnitude is allowed.
func appendQuoted(dst []byte, v reflect.Value, depth int) ([]byte, error) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return append(dst, "null"...), nil
		}
		v = v.Elem()
	}
	t := v.Type()
	if t == numberType {
		n := v.String()
		if n == "" {
			n = "0"
		}
		if !isJSONNumber(n) {
			return nil, errorf("%w: number %q", ErrInvalidJSON, n)
		}
		return appendString(dst, n)
	}
	if t.Implements(marshalerT) || t.Implements(textMarshT) || v.CanAddr() && (reflect.PointerTo(t).Implements(marshalerT) || reflect.PointerTo(t).Implements(textMarshT)) {
		return appendReflectValue(dst, v, depth, 0) // encoding/json ignores ",string" here
	}
	var text []byte
	switch t.Kind() {
	case reflect.Bool:
		text = strconv.AppendBool(nil, v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		text = strconv.AppendInt(nil, v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		text = strconv.AppendUint(nil, v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errorf("%v: %w", f, ErrNonFinite)
		}
		text, _ = json.Marshal(f)
	case reflect.String:
		s := v.String()
		if !utf8.ValidString(s) {
			return nil, errorf("%q: %w", s, ErrInvalidUTF8)
		}
		text, _ = json.Marshal(s) // encoding/json's escaping, HTML included
	default:
		return appendReflectValue(dst, v, depth, 0)
	}
	return appendString(dst, string(text))
}

// isEmptyValue is encoding/json's test for omitempty.
func isEmptyValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64,
		reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

func cachedStructInfo(t reflect.Type) *structInfo {
	if s, ok := structCache.Load(t); ok {
		return s.(*structInfo)
	}
	s, _ := structCache.LoadOrStore(t, newStructInfo(t))
	return s.(*structInfo)
}

// newStructInfo lists the JSON fields of t by encoding/json's rules
// (typeFields): exported fields and the fields of embedded structs,
// breadth first, a name's shallowest field winning, tagged before untagged
// at the same depth, and a name dropped when that leaves a tie.
func newStructInfo(t reflect.Type) *structInfo {
	type queued struct {
		typ   reflect.Type
		index []int
	}
	var fields []fieldInfo
	current, next := []queued{}, []queued{{typ: t}}
	var count, nextCount map[reflect.Type]int
	visited := map[reflect.Type]bool{}
	for len(next) > 0 {
		current, next = next, current[:0]
		count, nextCount = nextCount, map[reflect.Type]int{}
		for _, q := range current {
			if visited[q.typ] {
				continue
			}
			visited[q.typ] = true
			for i := range q.typ.NumField() {
				sf := q.typ.Field(i)
				if sf.Anonymous {
					et := sf.Type
					if et.Kind() == reflect.Pointer {
						et = et.Elem()
					}
					if !sf.IsExported() && et.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				if !isValidTag(name) {
					name = ""
				}
				index := append(slices.Clone(q.index), i)
				ft := sf.Type
				if ft.Name() == "" && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if name != "" || !sf.Anonymous || ft.Kind() != reflect.Struct {
					f := fieldInfo{
						name:      name,
						tagged:    name != "",
						index:     index,
						typ:       ft,
						omitEmpty: hasTagOption(opts, "omitempty"),
						omitZero:  hasTagOption(opts, "omitzero"),
					}
					if f.name == "" {
						f.name = sf.Name
					}
					if hasTagOption(opts, "string") {
						switch ft.Kind() {
						case reflect.Bool,
							reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
							reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
							reflect.Float32, reflect.Float64, reflect.String:
							f.quoted = true
						}
					}
					if f.omitZero {
						f.isZero = isZeroFunc(sf.Type)
					}
					fields = append(fields, f)
					if count[q.typ] > 1 {
						// Several embedded copies at this depth: a duplicate
						// makes the name ambiguous below.
						fields = append(fields, fields[len(fields)-1])
					}
					continue
				}
				nextCount[ft]++
				if nextCount[ft] == 1 {
					next = append(next, queued{typ: ft, index: index})
				}
			}
		}
	}
	slices.SortFunc(fields, func(a, b fieldInfo) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		if c := cmp.Compare(len(a.index), len(b.index)); c != 0 {
			return c
		}
		if a.tagged != b.tagged {
			if a.tagged {
				return -1
			}
			return 1
		}
		return slices.Compare(a.index, b.index)
	})
	out := fields[:0]
	for i := 0; i < len(fields); {
		j := i + 1
		for j < len(fields) && fields[j].name == fields[i].name {
			j++
		}
		// The first is dominant unless the second is as shallow and as tagged.
		if j-i == 1 || len(fields[i].index) != len(fields[i+1].index) || fields[i].tagged != fields[i+1].tagged {
			out = append(out, fields[i])
		}
		i = j
	}
	slices.SortFunc(out, func(a, b fieldInfo) int { return compareUTF16String(a.name, b.name) })
	for i := range out {
		f := &out[i]
		f.prefix, _ = appendString(nil, f.name) // a valid tag or a Go identifier: valid UTF-8
		f.prefix = append(f.prefix, ':')
	}
	return &structInfo{fields: out}
}

// isZeroFunc returns how omitzero tests a field of type t: its IsZero
// method when it has one, else nil (reflect's zero value test).
func isZeroFunc(t reflect.Type) func(reflect.Value) bool {
	switch {
	case t.Kind() == reflect.Interface && t.Implements(isZeroerT):
		return func(v reflect.Value) bool {
			return v.IsNil() || v.Elem().Kind() == reflect.Pointer && v.Elem().IsNil() ||
				v.Interface().(interface{ IsZero() bool }).IsZero()
		}
	case t.Kind() == reflect.Pointer && t.Implements(isZeroerT):
		return func(v reflect.Value) bool {
			return v.IsNil() || v.Interface().(interface{ IsZero() bool }).IsZero()
		}
	case t.Implements(isZeroerT):
		return func(v reflect.Value) bool { return v.Interface().(interface{ IsZero() bool }).IsZero() }
	case reflect.PointerTo(t).Implements(isZeroerT):
		return func(v reflect.Value) bool {
			if !v.CanAddr() {
				v2 := reflect.New(v.Type()).Elem()
				v2.Set(v)
				v = v2
			}
			return v.Addr().Interface().(interface{ IsZero() bool }).IsZero()
		}
	}
	return nil
}

func hasTagOption(opts, name string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == name {
			return true
		}
	}
	return false
}

// isValidTag is encoding/json's test for a usable name in a json tag.
func isValidTag(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}
