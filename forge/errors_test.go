package forge

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sentinels lists every exported error variable of the package;
// TestSentinelsListed keeps the list complete.
var sentinels = map[string]error{
	"ErrUnsafeInteger":   ErrUnsafeInteger,
	"ErrNonFinite":       ErrNonFinite,
	"ErrInvalidUTF8":     ErrInvalidUTF8,
	"ErrUnsupported":     ErrUnsupported,
	"ErrTooDeep":         ErrTooDeep,
	"ErrWeakSecret":      ErrWeakSecret,
	"ErrAmbiguousPrefix": ErrAmbiguousPrefix,
	"ErrInvalidJSON":     ErrInvalidJSON,
	"ErrEmptyNamespace":  ErrEmptyNamespace,
	"ErrUnknownScheme":   ErrUnknownScheme,
	"ErrNoSecret":        ErrNoSecret,
	"ErrNoUUID":          ErrNoUUID,
	"ErrEmptySeparator":  ErrEmptySeparator,
	"ErrPythonType":      ErrPythonType,
}

// TestSentinelsListed parses the package and checks that sentinels names
// every exported Err variable, so that TestErrorPrefix covers new ones.
func TestSentinelsListed(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				for _, n := range s.(*ast.ValueSpec).Names {
					if strings.HasPrefix(n.Name, "Err") {
						declared = append(declared, n.Name)
					}
				}
			}
		}
	}
	var listed []string
	for n := range sentinels {
		listed = append(listed, n)
	}
	slices.Sort(declared)
	slices.Sort(listed)
	if !slices.Equal(declared, listed) {
		t.Fatalf("declared sentinels %v, listed %v", declared, listed)
	}
}

// TestErrorPrefix checks that every error message of the package starts
// with "forge: " exactly once, for the sentinels and for the errors that
// wrap them, and that errors.Is still matches through another layer.
func TestErrorPrefix(t *testing.T) {
	once := func(t *testing.T, err error) {
		t.Helper()
		msg := err.Error()
		if !strings.HasPrefix(msg, "forge: ") || strings.Count(msg, "forge:") != 1 {
			t.Errorf("message %q does not start with \"forge: \" exactly once", msg)
		}
	}
	for name, s := range sentinels {
		t.Run(name, func(t *testing.T) { once(t, s) })
	}
	deep := any("\xff")
	for range 3 {
		deep = map[string]any{"k": deep}
	}
	for _, tc := range []struct {
		name string
		err  func() error
		is   error
	}{
		{"unsafe int", func() error { _, err := Canonical(int64(1 << 60)); return err }, ErrUnsafeInteger},
		{"unsafe int fast path", func() error { _, err := MustNew("x").ID(int64(1 << 60)); return err }, ErrUnsafeInteger},
		{"unsafe int in struct", func() error { _, err := Canonical(struct{ N int64 }{1 << 60}); return err }, ErrUnsafeInteger},
		{"NaN", func() error { _, err := Canonical(math.NaN()); return err }, ErrNonFinite},
		{"NaN in map", func() error { _, err := Canonical(map[string]float64{"x": math.NaN()}); return err }, ErrNonFinite},
		{"invalid UTF-8", func() error { _, err := Canonical("\xff"); return err }, ErrInvalidUTF8},
		{"invalid UTF-8 nested", func() error { _, err := Canonical(deep); return err }, ErrInvalidUTF8},
		{"too deep", func() error { _, err := Canonical(nestMaps(1, MaxDepth)); return err }, ErrTooDeep},
		{"MarshalText output", func() error { _, err := Canonical(map[string]any{"t": badText("\xff")}); return err }, ErrInvalidUTF8},
		{"unsupported", func() error { _, err := Canonical(make(chan int)); return err }, ErrUnsupported},
		{"bad number", func() error { _, err := Canonical(json.Number("x")); return err }, ErrInvalidJSON},
		{"bad raw JSON", func() error { _, err := Canonical(json.RawMessage("{")); return err }, ErrInvalidJSON},
		{"CanonicalJSON", func() error { _, err := CanonicalJSON([]byte("{")); return err }, ErrInvalidJSON},
		{"CanonicalJSON unsafe", func() error { _, err := CanonicalJSON([]byte("[9007199254740993]")); return err }, ErrUnsafeInteger},
		{"CanonicalJSON UTF-8", func() error { _, err := CanonicalJSON([]byte("\"\xff\"")); return err }, ErrInvalidUTF8},
		{"ParseScheme", func() error { _, err := ParseScheme("bogus"); return err }, ErrUnknownScheme},
		{"New empty", func() error { _, err := New(""); return err }, ErrEmptyNamespace},
		{"New keyed without secret", func() error { _, err := New("x", WithScheme(SchemeKeyed)); return err }, ErrNoSecret},
		{"New unknown scheme", func() error { _, err := New("x", WithScheme(Scheme(9))); return err }, ErrUnknownScheme},
		{"New weak secret", func() error { _, err := New("x", WithSecret("s3cr3t")); return err }, ErrWeakSecret},
		{"Config weak secret", func() error {
			_, err := Config{Namespace: "x", Secret: SecretFromString("s3cr3t"), Scheme: SchemeKeyed}.Generator()
			return err
		}, ErrWeakSecret},
		{"CheckSecret", func() error { return CheckSecret("s3cr3t") }, ErrWeakSecret},
		{"ConfigFromEnv", func() error {
			_, err := ConfigFromEnv(func(k string) string { return map[string]string{EnvScheme: "bogus"}[k] })
			return err
		}, ErrUnknownScheme},
		{"Config.Generator", func() error { _, err := Config{}.Generator(); return err }, ErrEmptyNamespace},
		{"CheckPrefix", func() error { return CheckPrefix("a", "aa") }, ErrAmbiguousPrefix},
		{"PrefixedID", func() error { _, err := MustNew("x").PrefixedID("P", "", 1); return err }, ErrEmptySeparator},
		{"namespace UTF-8", func() error { _, err := New("\xff"); return err }, ErrInvalidUTF8},
		{"Extract separator", func() error { _, err := Extract("x", ""); return err }, ErrEmptySeparator},
		{"Extract", func() error { _, err := Extract("x", "-"); return err }, ErrNoUUID},
		{"PythonName type", func() error { _, err := PythonName("e", "", []any{struct{}{}}, nil); return err }, ErrPythonType},
		{"PythonName UTF-8", func() error { _, err := PythonName("\xff", "", nil, nil); return err }, ErrInvalidUTF8},
		{"PythonName kwarg", func() error { _, err := PythonName("e", "", nil, map[string]any{"k": "\xff"}); return err }, ErrInvalidUTF8},
		{"python scheme entity", func() error { _, err := MustNew("x", WithScheme(SchemePython)).ID(1); return err }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil {
				t.Fatal("no error")
			}
			once(t, err)
			if tc.is != nil && !errors.Is(fmt.Errorf("caller: %w", err), tc.is) {
				t.Errorf("errors.Is(%v, %v) is false through a wrapping layer", err, tc.is)
			}
		})
	}
}
