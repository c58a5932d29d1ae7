package forge

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

type celsius float32

type blob []byte

// TestFloat32WidenedExactly checks SPEC §2: a float32 is the double of the
// same value (0.1f is 0.100000001490116119384765625), on every path a
// float32 can take.
func TestFloat32WidenedExactly(t *testing.T) {
	f := float32(0.1)
	const x = "0.10000000149011612"
	for _, tc := range []struct {
		name string
		part any
		want string
	}{
		{"direct", f, x},
		{"named type", celsius(0.1), x},
		{"pointer", &f, x},
		{"in []any", []any{f}, "[" + x + "]"},
		{"in []float32", []float32{f, 1.5}, "[" + x + ",1.5]"},
		{"in array", [1]float32{f}, "[" + x + "]"},
		{"in map[string]any", map[string]any{"f": f}, `{"f":` + x + "}"},
		{"in map[string]float32", map[string]float32{"f": f}, `{"f":` + x + "}"},
		{"struct field", struct{ F float32 }{f}, `{"F":` + x + "}"},
		{"pointer field", struct{ F *float32 }{&f}, `{"F":` + x + "}"},
		{"large", float32(1e30), "1.0000000150474662e+30"},
		{"exact", float32(1.5), "1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical(tc.part)
			if err != nil {
				t.Fatal(err)
			}
			if want := "[" + tc.want + "]"; string(got) != want {
				t.Fatalf("got %s, want %s", got, want)
			}
			g := MustNew("f32")
			if id := g.MustID(tc.part); id != g.FromName(got) {
				t.Fatalf("ID %s does not hash the canonical name", id)
			}
		})
	}
}

// TestEmptyByteString checks SPEC §2: a nil and an empty byte string are
// both the empty string "", on every path; only a nil pointer is null.
func TestEmptyByteString(t *testing.T) {
	var nilPtr *[]byte
	nilSlice := []byte(nil)
	for _, tc := range []struct {
		name string
		part any
		want string
	}{
		{"nil", []byte(nil), `""`},
		{"empty", []byte{}, `""`},
		{"named nil", blob(nil), `""`},
		{"pointer to nil", &nilSlice, `""`},
		{"nil pointer", nilPtr, `null`},
		{"struct field nil", struct{ B []byte }{}, `{"B":""}`},
		{"struct field empty", struct{ B []byte }{[]byte{}}, `{"B":""}`},
		{"map value nil", map[string][]byte{"b": nil}, `{"b":""}`},
		{"in []any", []any{[]byte(nil), []byte{}}, `["",""]`},
		{"in [][]byte", [][]byte{nil, {}}, `["",""]`},
		{"nil pointer field", struct{ B *[]byte }{}, `{"B":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical(tc.part)
			if err != nil {
				t.Fatal(err)
			}
			if want := "[" + tc.want + "]"; string(got) != want {
				t.Fatalf("got %s, want %s", got, want)
			}
		})
	}
	g := MustNew("bytes")
	if g.MustID([]byte(nil)) != g.MustID([]byte{}) {
		t.Fatal("nil and empty byte strings give different IDs")
	}
}

type badText string

func (b badText) MarshalText() ([]byte, error) { return []byte(b), nil }

type badJSONText string

func (b badJSONText) MarshalJSON() ([]byte, error) { return []byte(`"` + string(b) + `"`), nil }

type ptrText struct{ s string }

func (p *ptrText) MarshalText() ([]byte, error) { return []byte(p.s), nil }

// nestMaps returns v inside n levels of map[string]any.
func nestMaps(v any, n int) any {
	for range n {
		v = map[string]any{"k": v}
	}
	return v
}

// TestInvalidUTF8AtAnyDepth checks SPEC §2: a string that is not valid
// UTF-8 is an error wherever it is (value, key, MarshalText or MarshalJSON
// output, at any depth), never silently U+FFFD.
func TestInvalidUTF8AtAnyDepth(t *testing.T) {
	type node struct {
		S    string `json:"s,omitempty"`
		Next *node  `json:"next,omitempty"`
	}
	chain := &node{S: "a\xffb"}
	for range 200 {
		chain = &node{Next: chain}
	}
	cases := []struct {
		name string
		part any
	}{
		{"struct chain 200", chain},
		{"MarshalText", badText("a\xffb")},
		{"MarshalText in map", map[string]any{"t": badText("\xff")}},
		{"MarshalText in struct", struct{ T badText }{"\xff"}},
		{"MarshalText map key", map[badText]int{"\xff": 1}},
		{"pointer MarshalText", &ptrText{"\xff"}},
		{"pointer MarshalText in slice", []ptrText{{"\xff"}}},
		{"MarshalJSON", badJSONText("a\xffb")},
		{"MarshalJSON deep", nestMaps(badJSONText("\xff"), 100)},
		{"json.RawMessage deep", nestMaps(json.RawMessage("\"\xff\""), 100)},
	}
	for _, depth := range []int{1, 32, 33, 40, 100, 500, MaxDepth - 2} {
		cases = append(cases,
			struct {
				name string
				part any
			}{"value at depth " + itoa(depth), nestMaps("\xff", depth)},
			struct {
				name string
				part any
			}{"key at depth " + itoa(depth), nestMaps(map[string]int{"\xff": 1}, depth-1)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical(tc.part)
			if !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf("got %.80q, %v; want ErrInvalidUTF8", got, err)
			}
			if _, err := MustNew("x").ID(tc.part); !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf("ID: %v, want ErrInvalidUTF8", err)
			}
		})
	}
	// The same values with valid text are accepted (the test can fail).
	if _, err := Canonical(nestMaps("ok", MaxDepth-2), badText("ok"), map[badText]int{"ok": 1}); err != nil {
		t.Fatal(err)
	}
}

func itoa(i int) string { return big.NewInt(int64(i)).String() }

// TestDepthLimit checks that values nested deeper than MaxDepth levels (the
// array of parts counts as one), and cyclic values, are an error
// (ErrTooDeep) rather than accepted, a hang or a stack overflow.
func TestDepthLimit(t *testing.T) {
	nestSlices := func(n int) any {
		var v any = 1
		for range n {
			v = []any{v}
		}
		return v
	}
	if _, err := Canonical(nestSlices(MaxDepth - 1)); err != nil {
		t.Fatalf("MaxDepth levels: %v", err)
	}
	cyclicSlice := []any{nil}
	cyclicSlice[0] = cyclicSlice
	cyclicMap := map[string]any{}
	cyclicMap["m"] = cyclicMap
	cyclicIface := new(any)
	*cyclicIface = cyclicIface
	type node struct{ Next *node }
	cyclicStruct := &node{}
	cyclicStruct.Next = cyclicStruct
	for _, tc := range []struct {
		name string
		part any
	}{
		{"slices", nestSlices(MaxDepth)},
		{"maps", nestMaps(1, MaxDepth)},
		{"absurd", nestMaps(1, 100000)},
		{"raw JSON", json.RawMessage(strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth))},
		{"cyclic slice", cyclicSlice},
		{"cyclic map", cyclicMap},
		{"cyclic interface", cyclicIface},
		{"cyclic struct", cyclicStruct},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Canonical(tc.part); !errors.Is(err, ErrTooDeep) {
				t.Fatalf("error %v, want ErrTooDeep", err)
			}
		})
	}
	ok := []byte(strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth))
	if _, err := CanonicalJSON(ok); err != nil {
		t.Fatalf("CanonicalJSON with MaxDepth levels: %v", err)
	}
	if _, err := CanonicalJSON(append([]byte("["), append(ok, ']')...)); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("CanonicalJSON with MaxDepth+1 levels: %v", err)
	}
}

// TestEveryPathAgrees checks that a value has one encoding whether it is a
// part, an element of []any, a map value, a struct field or behind a
// pointer, and that an error on one path is the same error on all.
func TestEveryPathAgrees(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	ts := time.Date(2024, 5, 6, 7, 8, 9, 120000000, cet)
	u := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	b := big.NewInt(-42)
	for _, v := range []any{
		"s", true, 7, int8(-8), uint64(9), 1.5, float32(0.1), celsius(0.25),
		ts, &ts, (*time.Time)(nil), u, &u, (*uuid.UUID)(nil),
		[]byte(nil), []byte{}, []byte{1, 2}, blob(nil),
		json.Number("1.50"), json.Number(""), json.Number("x"),
		b, *b, (*big.Int)(nil), new(big.Int).Lsh(big.NewInt(1), 70), new(big.Int).Exp(big.NewInt(10), big.NewInt(20), nil),
		int64(1 << 60), "\xff", json.RawMessage(`{"b":1,"a":2}`), json.RawMessage(nil),
	} {
		direct, derr := Canonical(v)
		var inner string
		if derr == nil {
			inner = string(direct[1 : len(direct)-1])
		}
		typ := reflect.TypeOf(v)
		st := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: typ}})).Elem()
		st.Field(0).Set(reflect.ValueOf(v))
		sl := reflect.Append(reflect.MakeSlice(reflect.SliceOf(typ), 0, 1), reflect.ValueOf(v))
		for _, p := range []struct {
			name string
			part any
			wrap string
		}{
			{"[]any", []any{v}, "[%]"},
			{"map[string]any", map[string]any{"v": v}, `{"v":%}`},
			{"struct field", st.Interface(), `{"V":%}`},
			{"pointer to struct", st.Addr().Interface(), `{"V":%}`},
			{"typed slice", sl.Interface(), "[%]"},
		} {
			got, err := Canonical(p.part)
			switch {
			case derr != nil:
				if err == nil || !sameSentinel(derr, err) {
					t.Errorf("%T %v: direct error %v, %s: %s, %v", v, v, derr, p.name, got, err)
				}
			case err != nil:
				t.Errorf("%T %v: %s: %v", v, v, p.name, err)
			case string(got) != "["+strings.Replace(p.wrap, "%", inner, 1)+"]":
				t.Errorf("%T %v: direct %s, %s %s", v, v, direct, p.name, got)
			}
		}
	}
}

// sameSentinel reports whether a and b wrap the same package sentinel.
func sameSentinel(a, b error) bool {
	for _, s := range sentinels {
		if errors.Is(a, s) != errors.Is(b, s) {
			return false
		}
	}
	return true
}

type hiddenBig = big.Int

type hiddenZero struct{ V int }

func (z hiddenZero) IsZero() bool { return z.V == 0 }

// TestUnexportedEmbeddedNoPanic checks that values reflect cannot read
// (behind a tagged unexported embedded field, where encoding/json panics)
// are an error, not a panic.
func TestUnexportedEmbeddedNoPanic(t *testing.T) {
	type bigHolder struct {
		hiddenBig `json:"b"`
	}
	type zeroHolder struct {
		hiddenZero `json:"z,omitzero"`
	}
	for _, v := range []any{bigHolder{*big.NewInt(5)}, zeroHolder{hiddenZero{1}}} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%T: panic %v", v, p)
				}
			}()
			if _, err := Canonical(v); !errors.Is(err, ErrUnsupported) {
				t.Errorf("%T: %v, want ErrUnsupported", v, err)
			}
		}()
	}
	// Addressable, the same values are readable.
	if got, err := Canonical(&bigHolder{*big.NewInt(5)}); err != nil || string(got) != "[5]" {
		t.Errorf("pointer: %s, %v", got, err)
	}
}

// TestNegativeZero checks SPEC.md §2 ("-0 is 0") on every path a float
// takes, and §5 (Python writes "-0.0"). negZero is computed: the constant
// -0.0 is +0 in Go.
func TestNegativeZero(t *testing.T) {
	negZero := math.Copysign(0, -1)
	if !math.Signbit(negZero) || !math.Signbit(float64(float32(negZero))) {
		t.Fatal("negZero is not negative zero")
	}
	type fields struct {
		F float64
		G float32
		P *float64
		A any
	}
	pos := 0.0
	for _, tc := range []struct {
		name     string
		neg, pos any
	}{
		{"float64", negZero, 0.0},
		{"float32", float32(negZero), float32(0)},
		{"pointer", &negZero, &pos},
		{"named float", celsius(negZero), celsius(0)},
		{"struct fields", fields{negZero, float32(negZero), &negZero, negZero}, fields{0, 0, &pos, 0.0}},
		{"map value", map[string]float64{"v": negZero}, map[string]float64{"v": 0}},
		{"slice element", []float64{negZero}, []float64{0}},
		{"json.Number", json.Number("-0"), json.Number("0")},
		{"json.Number with fraction", json.Number("-0.0e5"), json.Number("0")},
		{"raw JSON", json.RawMessage(`[-0,-0.0,-0e0,-0E+5,{"v":-0.0}]`), json.RawMessage(`[0,0,0,0,{"v":0}]`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			neg, err := Canonical(tc.neg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Canonical(tc.pos)
			if err != nil {
				t.Fatal(err)
			}
			if string(neg) != string(want) || strings.Contains(string(neg), "-") {
				t.Errorf("name %s, want %s", neg, want)
			}
			for _, g := range []*Generator{MustNew("x"), MustNew("x", WithSecret("0123456789abcdef"))} {
				if g.MustID(tc.neg) != g.MustID(tc.pos) || g.MustID("a", tc.neg) != g.MustID("a", tc.pos) {
					t.Errorf("%s: -0 and 0 give different IDs", g.Scheme())
				}
			}
		})
	}
	if got, err := CanonicalJSON([]byte("-0.0")); err != nil || string(got) != "0" {
		t.Errorf("CanonicalJSON(-0.0) = %s, %v; want 0", got, err)
	}
	// Python's repr keeps the sign: §5 writes -0.0.
	name, err := PythonName("e", "", []any{negZero, 0.0}, nil)
	if err != nil || string(name) != "e|-0.0|0.0" {
		t.Errorf("PythonName(-0, 0) = %q, %v; want e|-0.0|0.0", name, err)
	}
}
