package forge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
)

// FuzzCanonical feeds the encoder Go values built from the fuzzer's input
// and arbitrary JSON texts. It must never panic; whatever it accepts must
// be valid JSON that canonicalizes to itself, and the same input must give
// the same name.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"", "john@example.com", "q\"b\\\x00\u2028é😀", "a\xffb"} {
		f.Add(s, int64(12345), 1.5, true, []byte(`{"sku":"A","qty":2}`))
	}
	f.Add("EUR", int64(MaxSafeInteger+1), math.Inf(1), false, []byte(`[1e400]`))
	f.Add("x", int64(-7), 1e21, false, []byte(`{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5}`))
	f.Add("y", int64(0), 5e-324, true, []byte(`{"a":{"b":[null,true,-0.0,1E-7,"\u00e9\/"]},"a":1}`))
	f.Add("z", int64(1), 1e20, true, []byte(` [ 100000000000000000000 , 9007199254740993 ] `))
	f.Fuzz(func(t *testing.T, s string, i int64, fl float64, b bool, raw []byte) {
		checkFixedPoint := func(out []byte) {
			t.Helper()
			if !json.Valid(out) {
				t.Fatalf("invalid JSON output %q", out)
			}
			again, err := CanonicalJSON(out)
			if err != nil {
				t.Fatalf("output %q does not canonicalize: %v", out, err)
			}
			if !bytes.Equal(again, out) {
				t.Fatalf("not a fixed point:\n%q\n%q", out, again)
			}
		}
		parts := []any{s, i, fl, b, nil, []byte(s), map[string]any{s: fl, "k": []any{i, s}}, struct {
			S string  `json:"s"`
			F float64 `json:"f"`
		}{s, fl}}
		out, err := Canonical(parts...)
		if err == nil {
			checkFixedPoint(out)
			again, err := Canonical(parts...)
			if err != nil || !bytes.Equal(out, again) {
				t.Fatalf("same input, different names: %q / %q (%v)", out, again, err)
			}
		} else if utf8.ValidString(s) && !math.IsNaN(fl) && !math.IsInf(fl, 0) && i <= MaxSafeInteger && i >= -MaxSafeInteger {
			t.Fatalf("valid parts rejected: %v", err)
		}

		// A value encodes the same as a part, nested in []any and in a map,
		// and as a struct field, float32 and nil []byte included.
		for _, v := range []any{s, float32(fl), fl, i, []byte(s), []byte(nil), nil} {
			direct, derr := Canonical(v)
			nested, nerr := Canonical([]any{v}, map[string]any{"v": v}, struct{ V any }{v})
			if (derr == nil) != (nerr == nil) {
				t.Fatalf("%T %v: direct error %v, nested error %v", v, v, derr, nerr)
			}
			if derr == nil {
				x := string(direct[1 : len(direct)-1])
				if want := "[[" + x + `],{"v":` + x + `},{"V":` + x + "}]"; string(nested) != want {
					t.Fatalf("%T %v: nested %s, want %s", v, v, nested, want)
				}
			}
		}

		canon, err := CanonicalJSON(raw)
		if err != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("accepted invalid JSON %q", raw)
		}
		checkFixedPoint(canon)
		// A value and its canonical form are the same part.
		a, err1 := Canonical(json.RawMessage(raw))
		c, err2 := Canonical(json.RawMessage(canon))
		if err1 != nil || err2 != nil || !bytes.Equal(a, c) {
			t.Fatalf("raw and canonical parts differ: %q %q (%v, %v)", a, c, err1, err2)
		}
		// Decoding and re-encoding with encoding/json keeps the name
		// (object order, whitespace and escapes do not matter).
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err == nil {
			if re, err := Canonical(v); err == nil && !bytes.Equal(re, a) {
				t.Fatalf("decoded value gives another name: %q vs %q", re, a)
			}
		}
	})
}

// FuzzExtract checks the prefixed-ID parser: no panics, and any prefix and
// separator round-trip through Prefix.
func FuzzExtract(f *testing.F) {
	u := uuid.MustParse("e26b5311-223f-5793-9890-bdefaa567c56")
	for _, tc := range []struct{ in, prefix, sep string }{
		{"INV-EUR-e26b5311-223f-5793-9890-bdefaa567c56", "INV-EUR", "-"},
		{"USR_e26b5311-223f-5793-9890-bdefaa567c56", "USR", "_"},
		{"A:B:e26b5311-223f-5793-9890-bdefaa567c56", "A:B", ":"},
		{"urn:uuid:e26b5311-223f-5793-9890-bdefaa567c56", "ff", "a"},
		{"not-a-uuid", "{", "-"},
		{"", "", ""},
		{"aaae26b5311-223f-5793-9890-bdefaa567c56", "a", "aa"},
		{"x---e26b5311-223f-5793-9890-bdefaa567c56", "x-", "--"},
		{"", "P\xff", "-"},
	} {
		f.Add(tc.in, tc.prefix, tc.sep, u[:])
	}
	f.Fuzz(func(t *testing.T, in, prefix, sep string, raw []byte) {
		got, err := Extract(in, sep)
		if err != nil {
			if got != uuid.Nil {
				t.Fatalf("error with a UUID: %s, %v", got, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
				t.Fatalf("error %q does not name the input", err)
			}
		} else if !hexSubsequence(strings.ReplaceAll(got.String(), "-", ""), strings.ToLower(in)) {
			t.Fatalf("Extract(%q) = %s, whose digits are not in the input", in, got)
		}
		if len(raw) < 16 {
			return
		}
		// CheckPrefix accepts exactly the prefixes and separators whose IDs
		// Extract reads back, whatever the UUID; PrefixedID agrees.
		id, _ := uuid.FromBytes(raw[:16])
		checked := CheckPrefix(prefix, sep)
		back, err := Extract(Prefix(prefix, sep, id), sep)
		readable := err == nil && back == id
		if valid := utf8.ValidString(prefix) && utf8.ValidString(sep); valid && readable != (checked == nil) {
			t.Fatalf("CheckPrefix(%q, %q) = %v, but Extract(Prefix(..., %s)) = %s, %v", prefix, sep, checked, id, back, err)
		}
		if err == nil && back != id {
			t.Fatalf("Extract(Prefix(%q, %q, %s)) = another UUID %s", prefix, sep, id, back)
		}
		p, err := MustNew("fuzz").PrefixedID(prefix, sep, prefix)
		if (err == nil) != (checked == nil) {
			t.Fatalf("PrefixedID(%q, %q): %v, CheckPrefix: %v", prefix, sep, err, checked)
		}
		if err == nil {
			if back, err := Extract(p, sep); err != nil || back != MustNew("fuzz").MustID(prefix) {
				t.Fatalf("Extract(PrefixedID(%q, %q)) = %s, %v", prefix, sep, back, err)
			}
		}
	})
}

// hexSubsequence reports whether the digits of want appear in order in s.
func hexSubsequence(want, s string) bool {
	for i := 0; i < len(s) && want != ""; i++ {
		if s[i] == want[0] {
			want = want[1:]
		}
	}
	return want == ""
}
