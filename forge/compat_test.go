package forge

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The types below exercise encoding/json's field rules, which the encoder
// follows; viaEncodingJSON is the reference.

type compatInner struct {
	A int    `json:"a"`
	B string `json:"b,omitempty"`
}

type compatEmbedded struct {
	E      string
	Shadow int
	Deep   int `json:"deep"`
}

type CompatExported struct {
	X  int `json:"x"`
	Up string
}

type compatText struct{ s string }

func (c compatText) MarshalText() ([]byte, error) { return []byte("t:" + c.s), nil }

type compatPtrText struct{ s string }

func (c *compatPtrText) MarshalText() ([]byte, error) { return []byte("p:" + c.s), nil }

type compatPtrJSON struct{ n int }

func (c *compatPtrJSON) MarshalJSON() ([]byte, error) {
	return []byte(`{ "n" : ` + strconv.Itoa(c.n) + `, "a": [1.0, "x"] }`), nil
}

type compatKey int

func (k compatKey) MarshalText() ([]byte, error) { return []byte("k" + strconv.Itoa(int(k))), nil }

type compatZeroer struct{ V int }

func (z compatZeroer) IsZero() bool { return z.V < 0 }

// CompatDupA and CompatDupB both promote Dup at the same depth, so
// encoding/json drops it.
type CompatDupA struct{ Dup, OnlyA int }

// CompatDupB: see CompatDupA.
type CompatDupB struct{ Dup int }

type compatAll struct {
	Plain     string
	Tagged    int          `json:"tagged"`
	Omit      string       `json:"omit,omitempty"`
	OmitSlice []int        `json:"os,omitempty"`
	OmitZero  compatInner  `json:"oz,omitzero"`
	OmitZ2    compatZeroer `json:"oz2,omitzero"`
	OmitPtr   *int         `json:"op,omitempty"`
	Skip      int          `json:"-"`
	Dash      int          `json:"-,"`
	Str       int          `json:",string"`
	StrF      float64      `json:"sf,string"`
	StrS      string       `json:"ss,string"`
	StrB      bool         `json:",string"`
	StrP      *int         `json:"sp,string"`
	StrNum    json.Number  `json:"sn,string"`
	BadTag    int          `json:"a\\b"`
	Num       json.Number
	Raw       json.RawMessage
	Bytes     []byte
	Arr       [3]byte
	Ptr       *compatInner
	NilPtr    *compatInner
	Iface     any
	Map       map[string]any
	IntMap    map[int]string
	UintMap   map[uint8]bool
	TextMap   map[compatKey]int
	Slice     []compatInner
	compatEmbedded
	*CompatExported
	Text     compatText
	PText    compatPtrText
	PTextPtr *compatPtrText
	PJSON    compatPtrJSON
	PJSONs   []compatPtrJSON
	unexp    int
	Shadow   string
	CompatDupA
	CompatDupB
	Uni      string `json:"ünï"`
	HTML     string
	Big      *big.Int
	U        uuid.UUID
	UP       *uuid.UUID
	T        time.Time
	F64      float64
	Nested   [][]map[string][]int
	Any      []any
	EmptyObj struct{}
}

func newCompat(s string, i int64, f float64, b bool) *compatAll {
	n := int(i % 1000)
	u := uuid.NewSHA1(uuid.NameSpaceDNS, []byte(s))
	return &compatAll{
		Plain: s, Tagged: n, Omit: s, OmitSlice: []int{n}[:(n & 1)], OmitZero: compatInner{A: n % 3},
		OmitZ2: compatZeroer{V: n - 500}, Dash: n, Str: n, StrF: f, StrS: s + "<&>\u2028", StrB: b, StrP: &n,
		StrNum: json.Number(strconv.Itoa(n)), BadTag: n,
		Num: json.Number(strconv.FormatFloat(f, 'g', -1, 64)), Raw: json.RawMessage(`{"z":[1,2.50],"a":null}`),
		Bytes: []byte(s), Arr: [3]byte{1, byte(n), 3}, Ptr: &compatInner{A: n, B: s},
		Iface:  map[string]any{"s": s, "n": n, "l": []any{f, b, nil}},
		Map:    map[string]any{s: n, "k" + s: []string{s}, "e": map[string]any{}},
		IntMap: map[int]string{n: s, -n - 1: "neg"}, UintMap: map[uint8]bool{uint8(n): b},
		TextMap:        map[compatKey]int{compatKey(n): 1, compatKey(n + 1): 2},
		Slice:          []compatInner{{A: 1}, {B: s}},
		compatEmbedded: compatEmbedded{E: s, Shadow: n, Deep: n}, CompatExported: &CompatExported{X: n, Up: s},
		Text: compatText{s}, PText: compatPtrText{s}, PTextPtr: &compatPtrText{s}, PJSON: compatPtrJSON{n},
		PJSONs: []compatPtrJSON{{n}, {n + 1}}, unexp: n, Shadow: s, CompatDupA: CompatDupA{1, 2}, CompatDupB: CompatDupB{3},
		Uni: s, HTML: "<a href='x'>&amp;</a>", Big: big.NewInt(i % MaxSafeInteger), U: u, UP: &u,
		T: time.Unix(i%4e9, int64(n)).UTC(), F64: f, Nested: [][]map[string][]int{{{"a": {n}}}, nil},
		Any: []any{s, n, f, b, nil, []any{}, map[string]any{}},
	}
}

// viaEncodingJSON is the name the encoder replaces: encoding/json's output,
// canonicalized.
func viaEncodingJSON(parts ...any) ([]byte, error) {
	raw, err := json.Marshal(parts)
	if err != nil {
		return nil, err
	}
	return CanonicalJSON(raw)
}

// TestEncodingJSONCompatibility checks that structs, maps and slices give
// the name that encoding/json gives them once canonicalized, outside the
// documented differences (float32, nil []byte, time zones, invalid UTF-8,
// unsafe integers).
func TestEncodingJSONCompatibility(t *testing.T) {
	empty := compatAll{Bytes: []byte{}} // a nil []byte is "" here, null there
	for i, v := range []any{
		empty, &empty,
		*newCompat("john", 42, 1.5, true), newCompat("", -7, math.Copysign(0, -1), false),
		newCompat("ö€😀\ufb33\r", 999999, 1e21, true), newCompat("x", 1, 5e-324, false),
		[]any{newCompat("a", 2, 0.1, true), map[string]*compatAll{"z": newCompat("b", 3, 2, false), "a": nil}},
		map[compatKey]compatText{1: {"x"}}, [2]compatPtrText{{"a"}, {"b"}}, []compatPtrText{{"a"}},
	} {
		want, err := viaEncodingJSON(v)
		if err != nil {
			t.Fatalf("%d: encoding/json: %v", i, err)
		}
		got, err := Canonical(v)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%d:\ngot  %s\nwant %s", i, got, want)
		}
	}
}

// FuzzEncodingJSONCompatibility compares the encoder with encoding/json on
// values built from the fuzzer's input: whenever encoding/json's output is
// accepted, the encoder must give the same name; invalid UTF-8 must be an
// error.
func FuzzEncodingJSONCompatibility(f *testing.F) {
	f.Add("john", int64(42), 1.5, true)
	f.Add("", int64(-1), math.Copysign(0, -1), false) // -0: the constant -0.0 is +0
	f.Add("ö€😀\ufb33\r\x00<>&\u2028", int64(MaxSafeInteger), 1e21, true)
	f.Add("a\xffb", int64(0), 0.1, false)
	f.Fuzz(func(t *testing.T, s string, i int64, fl float64, b bool) {
		v := newCompat(s, i, fl, b)
		got, err := Canonical(v)
		if !utf8.ValidString(s) {
			if err == nil {
				t.Fatalf("invalid UTF-8 accepted: %q", got)
			}
			return
		}
		want, werr := viaEncodingJSON(v)
		if werr != nil {
			return // NaN, Inf: both reject (checked by FuzzCanonical)
		}
		if err != nil {
			t.Fatalf("encoding/json accepts, Canonical: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("\ngot  %s\nwant %s", got, want)
		}
	})
}
