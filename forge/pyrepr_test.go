package forge

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"testing"

	"github.com/google/uuid"
)

var pointOne = 0.1

// Expected values come from CPython's repr().
func TestPythonRepr(t *testing.T) {
	big100 := new(big.Int).Lsh(big.NewInt(1), 100)
	for _, tc := range []struct {
		in   any
		want string
	}{
		{"abc", `'abc'`},
		{"it's", `"it's"`},
		{`say "hi"`, `'say "hi"'`},
		{`'"`, `'\'"'`},
		{"\x00\x7f\u0080\u00a0\u00ad\u200b\u2028\ue000\U000f0000\u00e9\u3000 \t\n\r\\", `'\x00\x7f\x80\xa0\xad\u200b\u2028\ue000\U000f0000` + "\u00e9" + `\u3000 \t\n\r\\'`},
		{"\xed\xa0\x80x", `'\ud800x'`}, // a lone surrogate carried as WTF-8
		{"", `''`},
		{0, "0"},
		{-5, "-5"},
		{uint64(math.MaxUint64), "18446744073709551615"},
		{big100, "1267650600228229401496703205376"},
		{*big100, "1267650600228229401496703205376"},
		{json.Number("-1267650600228229401496703205376"), "-1267650600228229401496703205376"},
		{json.Number("2.50"), "2.5"},
		{0.0, "0.0"},
		{math.Copysign(0, -1), "-0.0"},
		{1.0, "1.0"},
		{100.0, "100.0"},
		{pointOne + 0.2, "0.30000000000000004"}, // run-time sum, not a constant
		{9999999999999998.0, "9999999999999998.0"},
		{1e16, "1e+16"},
		{1e22, "1e+22"},
		{1.5e300, "1.5e+300"},
		{0.0001, "0.0001"},
		{1e-5, "1e-05"},
		{-1.5e-10, "-1.5e-10"},
		{123456789.0, "123456789.0"},
		{5e-324, "5e-324"},
		{math.NaN(), "nan"},
		{math.Inf(1), "inf"},
		{math.Inf(-1), "-inf"},
		{true, "True"},
		{false, "False"},
		{nil, "None"},
		{uuid.NameSpaceDNS, "UUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8')"},
	} {
		got, err := AppendPythonRepr(nil, tc.in)
		if err != nil {
			t.Errorf("repr(%#v): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("repr(%#v) = %s, want %s", tc.in, got, tc.want)
		}
	}
	for _, bad := range []any{"a\xffb", []int{1}, struct{}{}, json.Number("x")} {
		if _, err := AppendPythonRepr(nil, bad); err == nil {
			t.Errorf("repr(%#v): no error", bad)
		}
	}
	if _, err := AppendPythonRepr(nil, map[string]int{}); !errors.Is(err, ErrPythonType) {
		t.Errorf("map: %v, want ErrPythonType", err)
	}
}

func TestPythonName(t *testing.T) {
	name, err := PythonName("invoice", "s3cr3t", []any{"EUR"}, map[string]any{"b": 1, "a": 2.5, "é": nil})
	if err != nil {
		t.Fatal(err)
	}
	if want := `invoice|salt:s3cr3t|'EUR'|a=2.5|b=1|é=None`; string(name) != want {
		t.Fatalf("name %s, want %s", name, want)
	}
	name, _ = PythonName("user", "", nil, nil)
	if string(name) != "user" {
		t.Fatalf("bare entity: %s", name)
	}
	g := MustNew("x", WithScheme(SchemePython))
	if _, err := g.ID(); err == nil {
		t.Fatal("python ID without an entity type")
	}
	if _, err := g.ID(42); err == nil {
		t.Fatal("python ID with a non-string entity type")
	}
	if _, err := g.ID("e", Kwargs{"k": 1}, "late"); !errors.Is(err, ErrPythonType) {
		t.Fatalf("Kwargs before the last part: %v", err)
	}
	for _, bad := range [][3]string{{"a\xff", "", ""}, {"a", "\xff", ""}, {"a", "", "\xff"}} {
		if _, err := PythonName(bad[0], bad[1], nil, map[string]any{bad[2]: 1}); !errors.Is(err, ErrInvalidUTF8) {
			t.Errorf("PythonName(%q): %v", bad, err)
		}
	}
}
