package forge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
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

// FuzzPythonName checks the Python repr encoder and PythonName: no panics;
// a string is rejected exactly when it is neither UTF-8 nor WTF-8 (lone
// surrogates); a string's repr is valid UTF-8 and reads back as the string;
// a float's repr reads back as the same float, sign of zero included; an
// integer's as the integer; and the python-scheme ID is UUIDv5 of the name.
func FuzzPythonName(f *testing.F) {
	f.Add("invoice", "s3cr3t", "EUR", "region", int64(12345), 1.5, true)
	f.Add("order", "", "O'Brien", "é", int64(-1), math.Copysign(0, -1), false)
	f.Add("user", "salt", "say \"hi\" it's\x00\x7f\u00a0\u2028\U000f0000\\", "k", int64(MaxSafeInteger+1), 1e16, true)
	f.Add("e", "", "\xed\xa0\x80x", "\xff", int64(0), math.NaN(), false)
	f.Add("e\xff", "s\xff", "a\xffb", "", int64(math.MinInt64), 5e-324, true)
	f.Fuzz(func(t *testing.T, entity, salt, s, kw string, i int64, fl float64, b bool) {
		repr, err := AppendPythonRepr(nil, s)
		if (err != nil) != !isWTF8(s) {
			t.Fatalf("repr(%q): %v", s, err)
		}
		if err == nil {
			if !utf8.Valid(repr) {
				t.Fatalf("repr(%q) = %q is not UTF-8", s, repr)
			}
			back, ok := unPyRepr(string(repr))
			if !ok || !slices.Equal(back, wtf8Runes(s)) {
				t.Fatalf("repr(%q) = %s reads back as %q (%v)", s, repr, string(back), ok)
			}
		}
		fr, _ := AppendPythonRepr(nil, fl)
		switch {
		case math.IsNaN(fl):
			if string(fr) != "nan" {
				t.Fatalf("repr(NaN) = %s", fr)
			}
		default:
			if !bytes.ContainsAny(fr, ".ei") {
				t.Fatalf("repr(%v) = %s does not read as a float in Python", fl, fr)
			}
			text := strings.Replace(string(fr), "inf", "Inf", 1)
			back, err := strconv.ParseFloat(text, 64)
			if err != nil || back != fl || math.Signbit(back) != math.Signbit(fl) {
				t.Fatalf("repr(%v) = %s reads back as %v (%v)", fl, fr, back, err)
			}
		}
		ir, _ := AppendPythonRepr(nil, i)
		if back, err := strconv.ParseInt(string(ir), 10, 64); err != nil || back != i {
			t.Fatalf("repr(%d) = %s", i, ir)
		}

		name, err := PythonName(entity, salt, []any{s, i, fl, b, nil}, map[string]any{kw: s, kw + "2": fl})
		if valid := utf8.ValidString(entity) && utf8.ValidString(salt) && utf8.ValidString(kw) && isWTF8(s); valid != (err == nil) {
			t.Fatalf("PythonName(%q, %q, %q, %q): %v", entity, salt, s, kw, err)
		}
		if err != nil {
			return
		}
		head := entity
		if salt != "" {
			head += "|salt:" + salt
		}
		if want := head + "|" + string(repr) + "|"; !bytes.HasPrefix(name, []byte(want)) {
			t.Fatalf("name %q does not start with %q", name, want)
		}
		g := MustNew("fuzz.example.com", WithScheme(SchemePython), WithSecret(salt))
		id, err := g.PythonID(entity, []any{s, i, fl, b, nil}, map[string]any{kw: s, kw + "2": fl})
		if err != nil || id != uuid.NewSHA1(g.Namespace(), name) {
			t.Fatalf("PythonID = %s, %v; want UUIDv5 of %q", id, err, name)
		}
	})
}

// isWTF8 reports whether s is UTF-8 in which lone surrogates may appear as
// their three-byte forms (ED A0..BF 80..BF), as AppendPythonRepr accepts.
func isWTF8(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			if i+2 < len(s) && s[i] == 0xed && s[i+1]&0xe0 == 0xa0 && s[i+2]&0xc0 == 0x80 {
				i += 3
				continue
			}
			return false
		}
		i += size
	}
	return true
}

// wtf8Runes returns the code points of a WTF-8 string, surrogates included.
func wtf8Runes(s string) []rune {
	var out []rune
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			out = append(out, 0xd000|rune(s[i+1]&0x3f)<<6|rune(s[i+2]&0x3f))
			i += 3
			continue
		}
		out = append(out, r)
		i += size
	}
	return out
}

// unPyRepr reads a Python str literal as repr writes it: quoted with ' or
// ", escapes \\ \' \" \t \n \r \xNN \uNNNN \UNNNNNNNN, every other
// character printable. ok is false for anything else.
func unPyRepr(lit string) (out []rune, ok bool) {
	if len(lit) < 2 || (lit[0] != '\'' && lit[0] != '"') || lit[len(lit)-1] != lit[0] {
		return nil, false
	}
	quote, s := rune(lit[0]), []rune(lit[1:len(lit)-1])
	for i := 0; i < len(s); i++ {
		r := s[i]
		if r == quote || (r != ' ' && !pyPrintable(r)) {
			return nil, false
		}
		if r != '\\' {
			out = append(out, r)
			continue
		}
		if i++; i >= len(s) {
			return nil, false
		}
		width := 0
		switch s[i] {
		case '\\', '\'', '"':
			out = append(out, s[i])
		case 't':
			out = append(out, '\t')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 'x':
			width = 2
		case 'u':
			width = 4
		case 'U':
			width = 8
		default:
			return nil, false
		}
		if width > 0 {
			if i+width >= len(s) {
				return nil, false
			}
			v, err := strconv.ParseUint(string(s[i+1:i+1+width]), 16, 32)
			if err != nil {
				return nil, false
			}
			out = append(out, rune(v))
			i += width
		}
	}
	return out, true
}

// FuzzParseNamespace checks the namespace parser: no panics; the empty
// string and invalid UTF-8 are errors; a string that parses as a UUID is
// that UUID and any other is UUIDv5(NameSpaceDNS, s); New agrees; and the
// python configuration always maps a set namespace through UUIDv5, even a
// UUID (SPEC §7).
func FuzzParseNamespace(f *testing.F) {
	for _, s := range []string{"", "mycompany.com", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "{6BA7B810-9DAD-11D1-80B4-00C04FD430C8}",
		"urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b8109dad11d180b400c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430cg", "a\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, err := ParseNamespace(s)
		switch {
		case s == "":
			if !errors.Is(err, ErrEmptyNamespace) {
				t.Fatalf("empty namespace: %v", err)
			}
			return
		case !utf8.ValidString(s):
			if !errors.Is(err, ErrInvalidUTF8) {
				t.Fatalf("namespace %q: %v", s, err)
			}
			return
		case err != nil:
			t.Fatalf("namespace %q: %v", s, err)
		}
		want := uuid.NewSHA1(uuid.NameSpaceDNS, []byte(s))
		if u, err := uuid.Parse(s); err == nil {
			want = u
		}
		if ns != want {
			t.Fatalf("ParseNamespace(%q) = %s, want %s", s, ns, want)
		}
		if g, err := New(s); err != nil || g.Namespace() != ns {
			t.Fatalf("New(%q) = %v, %v", s, g, err)
		}
		g, err := Config{Namespace: s, Scheme: SchemePython}.Generator()
		if err != nil || g.Namespace() != uuid.NewSHA1(uuid.NameSpaceDNS, []byte(s)) {
			t.Fatalf("python config namespace %q: %v, %v", s, g, err)
		}
	})
}

// FuzzConfigFromEnv checks the environment parser: no panics; an unknown
// scheme name is an error naming the variable; otherwise the scheme is the
// named one, or keyed with a salt and v5 without; and no representation of
// the configuration shows the salt.
func FuzzConfigFromEnv(f *testing.F) {
	f.Add("orders.example.com", "example-secret-do-not-use", "")
	f.Add("orders.example.com", "", "v5")
	f.Add("", "s3cr3t", "python")
	f.Add("x", "0123456789abcdef", "hmac")
	f.Add("x", "k", "V5")
	f.Fuzz(func(t *testing.T, ns, salt, scheme string) {
		env := map[string]string{EnvNamespace: ns, EnvSalt: salt, EnvScheme: scheme}
		c, err := ConfigFromEnv(func(k string) string { return env[k] })
		want, perr := ParseScheme(scheme)
		switch {
		case scheme == "" && salt != "":
			want, perr = SchemeKeyed, nil
		case scheme == "":
			want, perr = SchemeV5, nil
		}
		if (err != nil) != (perr != nil) {
			t.Fatalf("scheme %q: ConfigFromEnv %v, ParseScheme %v", scheme, err, perr)
		}
		if err != nil {
			if !strings.Contains(err.Error(), EnvScheme) {
				t.Fatalf("error %q does not name %s", err, EnvScheme)
			}
			return
		}
		if c.Scheme != want || c.Namespace != ns {
			t.Fatalf("config %v, want scheme %s namespace %q", c, want, ns)
		}
		if len(salt) >= 8 && !strings.Contains(ns, salt) && !strings.Contains(fmt.Sprintf("%q", ns), salt) {
			raw, _ := json.Marshal(c)
			for _, shown := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), string(raw)} {
				if strings.Contains(shown, salt) {
					t.Fatalf("the salt shows in %q", shown)
				}
			}
		}
		if g, err := c.Generator(); err == nil && g.Scheme() != want {
			t.Fatalf("generator scheme %s, want %s", g.Scheme(), want)
		}
	})
}
