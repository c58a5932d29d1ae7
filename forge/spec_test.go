package forge

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// specTable returns the rows of the Markdown table between the markers
// <!-- name:begin --> and <!-- name:end --> in SPEC.md, cells unquoted
// from their backticks, "\|" read as "|".
func specTable(t *testing.T, name string) [][]string {
	t.Helper()
	data, err := os.ReadFile("SPEC.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("SPEC.md has no %s table", name)
	}
	var rows [][]string
	for _, line := range strings.Split(s[i+len(begin):j], "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		line = strings.TrimSuffix(strings.TrimPrefix(line, "| "), " |")
		line = strings.ReplaceAll(line, `\|`, "\x00")
		var cells []string
		for _, c := range strings.Split(line, " | ") {
			c = strings.TrimSpace(c)
			c = strings.TrimSuffix(strings.TrimPrefix(c, "`"), "`")
			cells = append(cells, strings.ReplaceAll(c, "\x00", "|"))
		}
		rows = append(rows, cells)
	}
	if len(rows) == 0 {
		t.Fatalf("SPEC.md %s table is empty", name)
	}
	return rows
}

// TestSpecExamples recomputes every worked example of SPEC.md §4.
func TestSpecExamples(t *testing.T) {
	rows := specTable(t, "spec-examples")
	for i, r := range rows {
		if len(r) != 5 {
			t.Fatalf("row %d has %d cells: %q", i, len(r), r)
		}
		ns, secret, input, name, want := r[0], r[1], r[2], r[3], r[4]
		canon, err := CanonicalJSON([]byte(input))
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if string(canon) != name {
			t.Errorf("row %d: canonical %s, SPEC says %s", i, canon, name)
		}
		var opts []Option
		if secret != "" {
			opts = append(opts, WithSecret(secret))
		}
		g := MustNew(ns, opts...)
		if got := g.FromName(canon).String(); got != want {
			t.Errorf("row %d: UUID %s, SPEC says %s", i, got, want)
		}
	}
	// The same rows from Go values, as SPEC §4 describes them.
	cet := time.FixedZone("CET", 3600)
	negZero := math.Copysign(0, -1) // the constant -0.0 is +0 in Go
	if !math.Signbit(negZero) {
		t.Fatal("negZero is not negative zero")
	}
	goRows := [][]any{
		{"john@example.com"},
		{"EUR", 12345},
		{map[string]any{"sku": "A", "qty": 2}, 7},
		{"Zoë \"Z\"\n", 1.50, 1e21, 0.000001, negZero, true, nil},
		{uuid.NameSpaceDNS, time.Date(2024, 5, 6, 7, 8, 9, 120000000, cet), []byte{0, 1, 2, 0xfe, 0xff}},
		{map[string]int{"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001F600": 5, "\u00f6": 6}},
		{"https://example.com/a"},
		{float32(0.1), []byte(nil), []byte{}, (*[]byte)(nil)},
		{struct {
			At    time.Time `json:"at"`
			Key   []byte    `json:"key"`
			Ratio float32   `json:"ratio"`
		}{time.Date(2024, 5, 6, 7, 8, 9, 120000000, cet), nil, 0.1}},
		{"john@example.com"},
		{"EUR", 12345},
	}
	if len(goRows) != len(rows) {
		t.Fatalf("SPEC has %d examples, the Go table %d", len(rows), len(goRows))
	}
	for i, parts := range goRows {
		var opts []Option
		if rows[i][1] != "" {
			opts = append(opts, WithSecret(rows[i][1]))
		}
		name, err := Canonical(parts...)
		if err != nil {
			t.Fatal(err)
		}
		if string(name) != rows[i][3] {
			t.Errorf("Go row %d: name %s, SPEC says %s", i, name, rows[i][3])
		}
		if got := MustNew(rows[i][0], opts...).MustID(parts...).String(); got != rows[i][4] {
			t.Errorf("Go row %d: ID %s, SPEC says %s", i, got, rows[i][4])
		}
	}
}

// TestSpecPython recomputes the Python-scheme examples of SPEC.md §5.
func TestSpecPython(t *testing.T) {
	rows := specTable(t, "spec-python")
	calls := []struct {
		entity string
		args   []any
		kwargs map[string]any
	}{
		{"invoice", nil, map[string]any{"region": "EUR", "number": 12345}},
		{"user", []any{"john@example.com"}, nil},
		{"order", []any{"O'Brien", 1.0, 1e16, nil, true}, nil},
		{"user", []any{"john@example.com"}, nil},
	}
	if len(calls) != len(rows) {
		t.Fatalf("SPEC has %d python examples, the Go table %d", len(rows), len(calls))
	}
	for i, c := range calls {
		r := rows[i]
		name, err := PythonName(c.entity, r[1], c.args, c.kwargs)
		if err != nil {
			t.Fatal(err)
		}
		if string(name) != r[3] {
			t.Errorf("row %d: name %s, SPEC says %s", i, name, r[3])
		}
		g := MustNew(r[0], WithScheme(SchemePython), WithSecret(r[1]))
		got, err := g.PythonID(c.entity, c.args, c.kwargs)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != r[4] {
			t.Errorf("row %d: UUID %s, SPEC says %s", i, got, r[4])
		}
	}
}

// TestSpecNamespacesAndFingerprint checks the smaller tables and values in SPEC.md.
func TestSpecNamespacesAndFingerprint(t *testing.T) {
	data, err := os.ReadFile("SPEC.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, ns := range []string{"users", "invoices", "orders", "mycompany.com"} {
		row := "| `" + ns + "` | `" + MustNew(ns).Namespace().String() + "` |"
		if !strings.Contains(s, row) {
			t.Errorf("SPEC.md lacks the namespace row %s", row)
		}
	}
	if fp := "(`example-secret-do-not-use` → `" + Fingerprint("example-secret-do-not-use") + "`)"; !strings.Contains(s, fp) {
		t.Errorf("SPEC.md lacks the fingerprint example %s", fp)
	}
	if !strings.Contains(s, "\n## 8. Message IDs\n") || !strings.Contains(s, "\n### Content IDs") {
		t.Error("SPEC.md lacks the Message IDs or Content IDs section")
	}
}

// nfcStable lists the non-ASCII characters SPEC.md may hold literally:
// Unicode normalization (NFC, as editors apply it) leaves each unchanged
// (checked with Python's unicodedata.normalize). nfcFragile lists those
// that NFC rewrites; each line that holds one must also give its escaped
// form (\uXXXX or U+XXXX), so that a normalizing editor cannot silently
// change a vector.
var (
	nfcStable  = []rune("§±ëö–—‖…₁ₙ€→−≤😀")
	nfcFragile = []rune("\ufb33")
)

// TestSpecCharactersSurviveNFC checks that no literal character of
// SPEC.md can be changed by Unicode normalization without an escaped form
// next to it, and that the key-order vector's bytes are given in hex.
func TestSpecCharactersSurviveNFC(t *testing.T) {
	data, err := os.ReadFile("SPEC.md")
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(data), "\n") {
		for _, r := range line {
			switch {
			case r < 0x80 || slices.Contains(nfcStable, r):
			case slices.Contains(nfcFragile, r):
				esc := fmt.Sprintf(`\u%04x`, r)
				if r > 0xffff {
					esc = fmt.Sprintf("U+%04X", r)
				}
				if !strings.Contains(line, esc) && !strings.Contains(line, fmt.Sprintf("U+%04X", r)) {
					t.Errorf("line %d has U+%04X, which NFC changes, without %s or U+%04X: %s", n+1, r, esc, r, line)
				}
			default:
				t.Errorf("line %d has U+%04X: check its NFC form and add it to nfcStable or nfcFragile", n+1, r)
			}
		}
	}
	// The key-order row (sixth) in hex: the bytes survive any editor.
	const label = "The key-order row's name in UTF-8 is `"
	i := strings.Index(string(data), label)
	if i < 0 {
		t.Fatal("SPEC.md lacks the key-order row's name in hex")
	}
	rest := string(data[i+len(label):])
	want, err := hex.DecodeString(rest[:strings.IndexByte(rest, '`')])
	if err != nil {
		t.Fatal(err)
	}
	got, err := Canonical(map[string]int{"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001F600": 5, "\u00f6": 6})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("SPEC.md hex %x, canonical %x", want, got)
	}
	if rows := specTable(t, "spec-examples"); rows[5][3] != string(got) {
		t.Fatalf("key-order row name %q, canonical %q", rows[5][3], got)
	}
}
