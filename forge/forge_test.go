package forge

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestRFC9562v5(t *testing.T) {
	g := MustNew(uuid.NameSpaceDNS.String())
	const want = "2ed6657d-e927-568b-95e1-2665a8aea6a2"
	if got := g.FromName([]byte("www.example.com")); got.String() != want {
		t.Fatalf("UUIDv5(DNS, www.example.com) = %s, want %s", got, want)
	}
	// The fast path agrees with google/uuid on a canonical name.
	name, err := Canonical("www.example.com")
	if err != nil {
		t.Fatal(err)
	}
	got, err := g.ID("www.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if want := uuid.NewSHA1(uuid.NameSpaceDNS, name); got != want {
		t.Fatalf("ID = %s, uuid.NewSHA1 = %s", got, want)
	}
	if got.Version() != 5 || got.Variant() != uuid.RFC4122 {
		t.Fatalf("version %d variant %v", got.Version(), got.Variant())
	}
}

// Vectors computed independently with Python's hmac module:
// hmac.new(key, ns.bytes + name, sha256).digest()[:16], version 8, RFC variant.
func TestKeyedVectors(t *testing.T) {
	ns := uuid.NewSHA1(uuid.NameSpaceDNS, []byte("mycompany.com"))
	for _, tc := range []struct {
		name, secret string
		parts        []any
		want         string
	}{
		{"SPEC secret", "example-secret-do-not-use", []any{"john@example.com"}, "4eec223f-c92c-8d5c-a0d8-8a800e129900"},
		{"SPEC secret, two parts", "example-secret-do-not-use", []any{"EUR", 12345}, "01184f18-0b4f-887c-af46-1dfd3b195d11"},
		{"key longer than a block", strings.Repeat("k", 100), []any{"EUR", 12345}, "df85305b-720a-8b29-b0a4-6e27c136bdc2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := MustNew("mycompany.com", WithSecret(tc.secret))
			if g.Namespace() != ns {
				t.Fatalf("namespace %s, want %s", g.Namespace(), ns)
			}
			if g.Scheme() != SchemeKeyed {
				t.Fatalf("scheme %s, want keyed", g.Scheme())
			}
			got, err := g.ID(tc.parts...)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			if got.Version() != 8 || got.Variant() != uuid.RFC4122 {
				t.Fatalf("version %d variant %v, want 8 and RFC 9562", got.Version(), got.Variant())
			}
			// The slow path (a non-simple part) hashes the same bytes.
			name, _ := Canonical(tc.parts...)
			if slow := g.FromName(name); slow != got {
				t.Fatalf("FromName = %s, ID = %s", slow, got)
			}
		})
	}
}

func TestKeyedBits(t *testing.T) {
	g := MustNew("bits", WithSecret("secret-0123456789"))
	v := MustNew("bits")
	for i := range 500 {
		u := g.MustID(i)
		if u.Version() != 8 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("%d: %s has version %d variant %v", i, u, u.Version(), u.Variant())
		}
		if u == v.MustID(i) {
			t.Fatalf("keyed and v5 IDs collide for %d", i)
		}
	}
	other := MustNew("bits", WithSecret("other secret-0123456789"))
	if g.MustID("x") == other.MustID("x") {
		t.Fatal("different secrets give the same ID")
	}
}

func TestNamespace(t *testing.T) {
	const nsText = "6ba7b811-9dad-11d1-80b4-00c04fd430c8" // NameSpaceURL
	for _, tc := range []struct {
		in   string
		want uuid.UUID
	}{
		{nsText, uuid.NameSpaceURL},
		{strings.ToUpper(nsText), uuid.NameSpaceURL},
		{"users", uuid.NewSHA1(uuid.NameSpaceDNS, []byte("users"))},
		{"mycompany.com", uuid.MustParse("cf04bb62-eed1-589c-9900-ac86662dd66f")},
		{"not-a-uuid-but-36-characters-long!!", uuid.NewSHA1(uuid.NameSpaceDNS, []byte("not-a-uuid-but-36-characters-long!!"))},
	} {
		g, err := New(tc.in)
		if err != nil {
			t.Fatalf("New(%q): %v", tc.in, err)
		}
		if g.Namespace() != tc.want {
			t.Errorf("New(%q).Namespace() = %s, want %s", tc.in, g.Namespace(), tc.want)
		}
	}
	if _, err := New(""); !errors.Is(err, ErrEmptyNamespace) {
		t.Fatalf("New(\"\") error = %v, want ErrEmptyNamespace", err)
	}
	if _, err := New("x", WithScheme(SchemeKeyed)); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("keyed without secret: %v, want ErrNoSecret", err)
	}
	if _, err := New("x", WithScheme(Scheme(42))); !errors.Is(err, ErrUnknownScheme) {
		t.Fatalf("unknown scheme: %v", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustNew(\"\") did not panic")
			}
		}()
		MustNew("")
	}()
}

func TestIDExamples(t *testing.T) {
	users := MustNew("users")
	got, err := users.ID("john@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != "18f0fded-a579-526d-87df-487a8a60c334" { // python3: uuid5(uuid5(DNS,"users"), '["john@example.com"]')
		t.Fatalf("users.ID = %s", got)
	}
	inv := MustNew("invoices")
	if got := inv.MustID("EUR", 12345); got.String() != "6c7bc462-4987-5526-bfae-9c4efe86ec53" {
		t.Fatalf("invoices.ID(EUR, 12345) = %s", got)
	}
	if inv.MustID("EUR", 12345) == inv.MustID("EUR12345") || inv.MustID("EUR", 12345) == inv.MustID("EUR", "12345") {
		t.Fatal("part boundaries or types do not change the ID")
	}
}

type textID string

func (t textID) MarshalJSON() ([]byte, error) { return json.Marshal("id:" + string(t)) }

type badJSON struct{}

func (badJSON) MarshalJSON() ([]byte, error) { return []byte(`{"a":1,"a":2}`), nil }

type order struct {
	SKU   string            `json:"sku"`
	Qty   int               `json:"qty"`
	Price float64           `json:"price,omitempty"`
	Tags  map[string]string `json:"tags,omitempty"`
	skip  int
}

func TestCanonical(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 120000000, time.FixedZone("CET", 3600))
	u := uuid.MustParse("6BA7B810-9DAD-11D1-80B4-00C04FD430C8")
	var nilMap map[string]int
	for _, tc := range []struct {
		name  string
		parts []any
		want  string
	}{
		{"empty", nil, `[]`},
		{"string", []any{"john@example.com"}, `["john@example.com"]`},
		{"escapes", []any{"q\"b\\s/\b\f\n\r\t\x00\x1f\x7f<>&\u2028é😀"}, "[\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0000\\u001f\x7f<>&\u2028é😀\"]"},
		{"several", []any{"EUR", 12345}, `["EUR",12345]`},
		{"bools and nil", []any{true, false, nil}, `[true,false,null]`},
		{"ints", []any{int8(-8), uint16(16), int64(MaxSafeInteger), -MaxSafeInteger, uint64(0)}, `[-8,16,9007199254740991,-9007199254740991,0]`},
		{"floats", []any{0.0, math.Copysign(0, -1), 1.0, -1.5, 0.1, 1e21, 1e20, 1e-6, 1e-7, 123456789.125, 5e-324, math.MaxFloat64, 333333333.33333329, float32(0.1)}, `[0,0,1,-1.5,0.1,1e+21,100000000000000000000,0.000001,1e-7,123456789.125,5e-324,1.7976931348623157e+308,333333333.3333333,0.10000000149011612]`},
		{"uuid", []any{u, &u}, `["6ba7b810-9dad-11d1-80b4-00c04fd430c8","6ba7b810-9dad-11d1-80b4-00c04fd430c8"]`},
		{"time", []any{ts, &ts}, `["2024-05-06T06:08:09.12Z","2024-05-06T06:08:09.12Z"]`},
		{"bytes", []any{[]byte{0, 1, 2, 0xfe, 0xff}, []byte(nil), []byte{}}, `["AAEC/v8=","",""]`},
		{"big int", []any{big.NewInt(-42)}, `[-42]`},
		{"json number", []any{json.Number("1.50"), json.Number("12")}, `[1.5,12]`},
		{"struct", []any{order{SKU: "A", Qty: 2, Tags: map[string]string{"z": "1", "a": "2"}}}, `[{"qty":2,"sku":"A","tags":{"a":"2","z":"1"}}]`},
		{"map", []any{map[string]any{"sku": "A", "qty": 2, "n": []any{1.0, "x", nil}}}, `[{"n":[1,"x",null],"qty":2,"sku":"A"}]`},
		{"nil map and slice", []any{nilMap, []int(nil), []int{}}, `[null,null,[]]`},
		{"marshaler", []any{textID("7")}, `["id:7"]`},
		{"raw message", []any{json.RawMessage(` { "b" : 1e2 , "a" : [ 1.0E-7 , "\u00e9\/" ] } `)}, `[{"a":[1e-7,"é/"],"b":100}]`},
		{"html escapes normalised", []any{map[string]string{"k": "<a&b>"}}, `[{"k":"<a&b>"}]`},
		// RFC 8785 §3.2.3: keys sorted by UTF-16 code units.
		{"utf16 key order", []any{map[string]int{"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001F600": 5, "\u0080": 6, "\u00f6": 7}},
			"[{\"\\r\":2,\"1\":4,\"\u0080\":6,\"\u00f6\":7,\"\u20ac\":1,\"\U0001F600\":5,\"\ufb33\":3}]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical(tc.parts...)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatalf("not valid JSON: %s", got)
			}
			again, err := CanonicalJSON(got)
			if err != nil || string(again) != string(got) {
				t.Fatalf("not a fixed point: %s -> %s (%v)", got, again, err)
			}
			// ID hashes exactly these bytes, on the fast and the slow path.
			g := MustNew("canon")
			id, err := g.ID(tc.parts...)
			if err != nil {
				t.Fatal(err)
			}
			if want := uuid.NewSHA1(g.Namespace(), got); id != want {
				t.Fatalf("ID = %s, NewSHA1(ns, canonical) = %s", id, want)
			}
		})
	}
}

func TestCanonicalErrors(t *testing.T) {
	type inner struct{ Name string }
	for _, tc := range []struct {
		name  string
		parts []any
		is    error
		text  string
	}{
		{"unsafe int", []any{int64(MaxSafeInteger + 1)}, ErrUnsafeInteger, "pass it as a string"},
		{"unsafe negative", []any{-MaxSafeInteger - 1}, ErrUnsafeInteger, "string"},
		{"unsafe uint", []any{uint64(math.MaxUint64)}, ErrUnsafeInteger, ""},
		{"unsafe big", []any{new(big.Int).Lsh(big.NewInt(1), 70)}, ErrUnsafeInteger, ""},
		{"unsafe in struct", []any{struct{ N int64 }{1 << 60}}, ErrUnsafeInteger, ""},
		{"unsafe json number", []any{json.Number("9007199254740993")}, ErrUnsafeInteger, ""},
		{"lossy json integer", []any{json.RawMessage(`[12345678901234567890]`)}, ErrUnsafeInteger, ""},
		{"unsafe uint in map", []any{map[string]uint64{"n": 1 << 53}}, ErrUnsafeInteger, ""},
		{"NaN", []any{math.NaN()}, ErrNonFinite, ""},
		{"Inf", []any{math.Inf(-1)}, ErrNonFinite, ""},
		{"NaN in map", []any{map[string]float64{"x": math.Inf(1)}}, ErrNonFinite, ""},
		{"invalid utf8", []any{"ok", "a\xffb"}, ErrInvalidUTF8, "part 1"},
		{"invalid utf8 in struct", []any{inner{"\xc3"}}, ErrInvalidUTF8, ""},
		{"invalid utf8 map key", []any{map[string]int{"\xff": 1}}, ErrInvalidUTF8, ""},
		{"channel", []any{make(chan int)}, ErrUnsupported, ""},
		{"bad json number", []any{json.Number("abc")}, ErrInvalidJSON, "abc"},
		{"bad json number 2", []any{json.Number("01")}, ErrInvalidJSON, ""},
		{"duplicate keys", []any{badJSON{}}, ErrInvalidJSON, "duplicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Canonical(tc.parts...)
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q does not mention %q", err, tc.text)
			}
			// Still matchable through another layer of wrapping.
			if wrapped := fmt.Errorf("caller: %w", err); !errors.Is(wrapped, tc.is) {
				t.Fatal("errors.Is lost through wrapping")
			}
			if _, err := MustNew("x").ID(tc.parts...); !errors.Is(err, tc.is) {
				t.Fatalf("ID error %v, want %v", err, tc.is)
			}
		})
	}
}

func TestCanonicalJSONErrors(t *testing.T) {
	for _, in := range []string{``, `{`, `[1,]`, `{"a"}`, `{"a":1,}`, `01`, `1.`, `.5`, `1e`, `-`, `"\x"`, `"\ud800"`, `"\udc00\ud800"`, `"abc`, "\"\x01\"", `tru`, `nul`, `{} {}`, `{1:2}`, `{"a":1,"a":2}`, `{"\u0061":1,"a":2}`, `NaN`, `[1e400]`, "\"\xff\""} {
		if out, err := CanonicalJSON([]byte(in)); err == nil {
			t.Errorf("CanonicalJSON(%q) = %s, want an error", in, out)
		}
	}
}

func TestMapOrderNeverChangesID(t *testing.T) {
	g := MustNew("orders")
	want := g.MustID(map[string]any{"sku": "A", "qty": 2, "nested": map[string]any{"b": 1, "a": 2}})
	for i := range 50 {
		m := map[string]any{}
		nested := map[string]any{}
		// insertion order varies; Go also randomises iteration order
		if i%2 == 0 {
			m["qty"], m["sku"] = 2, "A"
			nested["a"], nested["b"] = 2, 1
		} else {
			m["sku"], m["qty"] = "A", 2
			nested["b"], nested["a"] = 1, 2
		}
		m["nested"] = nested
		if got := g.MustID(m); got != want {
			t.Fatalf("iteration %d: %s != %s", i, got, want)
		}
	}
	raw := g.MustID(json.RawMessage(`{"nested":{"a":2,"b":1},"qty":2,"sku":"A"}`))
	rev := g.MustID(json.RawMessage(`{"sku":"A","qty":2.0,"nested":{"b":1,"a":2}}`))
	if raw != want || rev != want {
		t.Fatalf("raw JSON IDs %s %s, want %s", raw, rev, want)
	}
	type st struct {
		Nested map[string]int `json:"nested"`
		Qty    int            `json:"qty"`
		SKU    string         `json:"sku"`
	}
	if got := g.MustID(st{map[string]int{"a": 2, "b": 1}, 2, "A"}); got != want {
		t.Fatalf("struct ID %s, want %s", got, want)
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	const secret = "super-secret-value-1234567890"
	for _, g := range []*Generator{
		MustNew("users", WithSecret(secret)),
		MustNew("users", WithScheme(SchemePython), WithSecret(secret)),
	} {
		for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			if out := fmt.Sprintf(f, g); strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
				t.Fatalf("%s prints the secret: %s", f, out)
			}
		}
		if out := fmt.Sprintf("%+v", *g); strings.Contains(out, secret) {
			t.Fatalf("dereferenced generator prints the secret: %s", out)
		}
		if fp := g.Fingerprint(); fp == "none" || len(fp) != 16 || strings.Contains(secret, fp) {
			t.Fatalf("fingerprint %q", fp)
		}
		if !strings.Contains(g.String(), g.Fingerprint()) {
			t.Fatalf("String() lacks the fingerprint: %s", g)
		}
	}
	c := Config{Namespace: "n", Secret: SecretFromString(secret), Scheme: SchemeKeyed}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, c); strings.Contains(out, secret) {
			t.Fatalf("Config %s prints the secret: %s", f, out)
		}
	}
	if MustNew("users").Fingerprint() != "none" {
		t.Fatal("fingerprint without a secret")
	}
	if Fingerprint("a") == Fingerprint("b") {
		t.Fatal("fingerprints collide")
	}
}

func TestNewSecret(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret()
	if a == b {
		t.Fatal("two secrets are equal")
	}
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) < 32 {
		t.Fatalf("secret %q: %d bytes, %v", a, len(raw), err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	ns := uuid.NewSHA1(uuid.NameSpaceDNS, []byte("mycompany.com"))
	for _, tc := range []struct {
		name      string
		env       map[string]string
		scheme    Scheme
		namespace uuid.UUID
		err       error
	}{
		{"namespace only", map[string]string{EnvNamespace: "mycompany.com"}, SchemeV5, ns, nil},
		{"uuid namespace", map[string]string{EnvNamespace: ns.String()}, SchemeV5, ns, nil},
		{"salt means keyed", map[string]string{EnvNamespace: "mycompany.com", EnvSalt: strongSecret}, SchemeKeyed, ns, nil},
		{"explicit v5 ignores salt", map[string]string{EnvNamespace: "mycompany.com", EnvSalt: strongSecret, EnvScheme: "v5"}, SchemeV5, ns, nil},
		{"alias v8", map[string]string{EnvNamespace: "mycompany.com", EnvSalt: strongSecret, EnvScheme: "v8"}, SchemeKeyed, ns, nil},
		{"python default namespace", map[string]string{EnvScheme: "python"}, SchemePython, uuid.NameSpaceDNS, nil},
		{"python domain", map[string]string{EnvScheme: "python", EnvNamespace: "mycompany.com"}, SchemePython, ns, nil},
		{"python uuid text is a domain", map[string]string{EnvScheme: "python", EnvNamespace: ns.String()}, SchemePython, uuid.NewSHA1(uuid.NameSpaceDNS, []byte(ns.String())), nil},
		{"no namespace", map[string]string{}, 0, uuid.Nil, ErrEmptyNamespace},
		{"keyed without salt", map[string]string{EnvNamespace: "n", EnvScheme: "keyed"}, 0, uuid.Nil, ErrNoSecret},
		{"bad scheme", map[string]string{EnvNamespace: "n", EnvScheme: "v4"}, 0, uuid.Nil, ErrUnknownScheme},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{EnvNamespace, EnvSalt, EnvScheme} {
				t.Setenv(k, tc.env[k])
			}
			g, err := FromEnv()
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.Scheme() != tc.scheme || g.Namespace() != tc.namespace {
				t.Fatalf("got %s, want scheme %s namespace %s", g, tc.scheme, tc.namespace)
			}
		})
	}
}

func TestParseScheme(t *testing.T) {
	for _, s := range []Scheme{SchemeV5, SchemeKeyed, SchemePython} {
		got, err := ParseScheme(s.String())
		if err != nil || got != s {
			t.Fatalf("ParseScheme(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseScheme("v4"); !errors.Is(err, ErrUnknownScheme) {
		t.Fatal(err)
	}
}

func TestExtract(t *testing.T) {
	u := uuid.MustParse("e26b5311-223f-5793-9890-bdefaa567c56")
	for _, tc := range []struct {
		in, sep string
		ok      bool
	}{
		{"e26b5311-223f-5793-9890-bdefaa567c56", "-", true},
		{"E26B5311-223F-5793-9890-BDEFAA567C56", "-", true},
		{"INV-e26b5311-223f-5793-9890-bdefaa567c56", "-", true},
		{"INV-EUR-2024-e26b5311-223f-5793-9890-bdefaa567c56", "-", true},
		{"USR_e26b5311-223f-5793-9890-bdefaa567c56", "_", true},
		{"A:B:e26b5311-223f-5793-9890-bdefaa567c56", ":", true},
		{"x::e26b5311-223f-5793-9890-bdefaa567c56", "::", true},
		{"urn:uuid:e26b5311-223f-5793-9890-bdefaa567c56", "-", true},
		{"{e26b5311-223f-5793-9890-bdefaa567c56}", "-", true},
		{"e26b5311223f57939890bdefaa567c56", "-", true},
		{"P-e26b5311223f57939890bdefaa567c56", "-", true},
		{"not-a-uuid", "-", false},
		{"", "-", false},
		{"INV-e26b5311-223f-5793-9890-bdefaa567c5", "-", false},
		{"INV-e26b5311-223f-5793-9890-bdefaa567c56x", "-", false},
		{"INV_e26b5311-223f-5793-9890-bdefaa567c56", "-", false},
		{"e26b5311-223f-5793-9890-bdefaa567c56", "", false},
	} {
		got, err := Extract(tc.in, tc.sep)
		if tc.ok {
			if err != nil || got != u {
				t.Errorf("Extract(%q, %q) = %s, %v; want %s", tc.in, tc.sep, got, err, u)
			}
			continue
		}
		if err == nil {
			t.Errorf("Extract(%q, %q) = %s, want an error", tc.in, tc.sep, got)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.in)) {
			t.Errorf("error %q does not name the input", err)
		}
	}
	if _, err := Extract("nope", "-"); !errors.Is(err, ErrNoUUID) {
		t.Fatalf("want ErrNoUUID, got %v", err)
	}
	if got := Prefix("", "-", u); got != u.String() {
		t.Fatalf("empty prefix: %q", got)
	}
	g := MustNew("invoices")
	p, err := g.PrefixedID("INV", "-", "EUR", 12345)
	if err != nil || p != "INV-"+g.MustID("EUR", 12345).String() {
		t.Fatalf("PrefixedID = %q, %v", p, err)
	}
}

// TestPrefixedIDReadsBack checks that PrefixedID refuses what Extract
// could not read back (an empty separator, a separator overlapping the
// prefix, text that is not UTF-8) and that CheckPrefix says so.
func TestPrefixedIDReadsBack(t *testing.T) {
	g := MustNew("invoices")
	for _, tc := range []struct {
		prefix, sep string
		is          error
	}{
		{"INV", "-", nil}, {"INV-EUR", "-", nil}, {"", "-", nil}, {"A:B", ":", nil}, {"x", "::", nil},
		{"aa", "a", nil}, {"x-", "--", nil}, {"{", "}", nil}, {"€", "ö", nil},
		{"a", "aa", ErrAmbiguousPrefix}, {"xa", "aa", ErrAmbiguousPrefix},
		{"P", "", ErrEmptySeparator}, {"", "", ErrEmptySeparator},
		{"P\xff", "-", ErrInvalidUTF8}, {"P", "\xff", ErrInvalidUTF8},
	} {
		p, err := g.PrefixedID(tc.prefix, tc.sep, "EUR", 12345)
		if !errors.Is(err, tc.is) || !errors.Is(CheckPrefix(tc.prefix, tc.sep), tc.is) {
			t.Errorf("PrefixedID(%q, %q) = %q, %v; CheckPrefix: %v; want %v", tc.prefix, tc.sep, p, err, CheckPrefix(tc.prefix, tc.sep), tc.is)
			continue
		}
		if err == nil {
			if back, err := Extract(p, tc.sep); err != nil || back != g.MustID("EUR", 12345) {
				t.Errorf("Extract(%q, %q) = %s, %v", p, tc.sep, back, err)
			}
		}
	}
	if _, err := New("ns\xff"); !errors.Is(err, ErrInvalidUTF8) {
		t.Errorf("namespace not UTF-8: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	gens := []*Generator{MustNew("c"), MustNew("c", WithSecret(strongSecret)), MustNew("c", WithScheme(SchemePython), WithSecret("k"))}
	parts := func(i, j int) []any {
		if i == 2 { // the python scheme takes Python-representable values only
			return []any{"e", j, "s", float64(j) / 3}
		}
		return []any{"e", j, order{SKU: "s", Qty: j}}
	}
	want := make([][]uuid.UUID, len(gens))
	for i, g := range gens {
		for j := range 50 {
			want[i] = append(want[i], g.MustID(parts(i, j)...))
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i, g := range gens {
				for j := range 50 {
					if got := g.MustID(parts(i, j)...); got != want[i][j] {
						t.Errorf("generator %d part %d: %s != %s", i, j, got, want[i][j])
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestZeroGenerator(t *testing.T) {
	var g Generator
	got, err := g.ID("x")
	if err != nil {
		t.Fatal(err)
	}
	name, _ := Canonical("x")
	if want := uuid.NewSHA1(uuid.Nil, name); got != want || g.Namespace() != uuid.Nil || g.Scheme() != SchemeV5 {
		t.Fatalf("zero generator: %s, want %s", got, want)
	}
}
