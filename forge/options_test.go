package forge

import (
	"errors"
	"strings"
	"testing"
)

// TestOptionsValidatedInNew checks that a bad option is an error from New
// that names the option, never a silent default or a panic.
func TestOptionsValidatedInNew(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		is   error
		text string
	}{
		{"unknown scheme", []Option{WithScheme(Scheme(42))}, ErrUnknownScheme, "WithScheme"},
		{"negative scheme", []Option{WithScheme(Scheme(-1))}, ErrUnknownScheme, "WithScheme"},
		{"secret not UTF-8", []Option{WithSecret("\xff" + strings.Repeat("k", 20))}, ErrInvalidUTF8, "WithSecret"},
		{"python salt not UTF-8", []Option{WithScheme(SchemePython), WithSecret("s\xff")}, ErrInvalidUTF8, "WithSecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New("x", tc.opts...)
			if err == nil {
				t.Fatalf("New accepted the options: %v", g)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not name %s", err, tc.text)
			}
		})
	}
}

// TestNilOptionsIgnored checks that New skips nil options, as every other
// constructor of the module does, and applies the others.
func TestNilOptionsIgnored(t *testing.T) {
	const secret = "0123456789abcdef0123"
	for _, tc := range []struct {
		name string
		opts []Option
		want *Generator
	}{
		{"only nil", []Option{nil}, MustNew("x")},
		{"nil between options", []Option{nil, WithSecret(secret), nil}, MustNew("x", WithSecret(secret))},
		{"nil after the scheme", []Option{WithScheme(SchemePython), nil}, MustNew("x", WithScheme(SchemePython))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New("x", tc.opts...)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if g.Scheme() != tc.want.Scheme() || g.Fingerprint() != tc.want.Fingerprint() || g.MustID("a") != tc.want.MustID("a") {
				t.Errorf("got %v, want %v", g, tc.want)
			}
		})
	}
	c := Config{Namespace: "x", Secret: SecretFromString(secret), Scheme: SchemeKeyed}
	if g, err := c.Generator(nil); err != nil || g.MustID("a") != MustNew("x", WithSecret(secret)).MustID("a") {
		t.Errorf("Config.Generator(nil) = %v, %v", g, err)
	}
}
