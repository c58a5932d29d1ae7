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
		{"nil option", []Option{nil}, nil, "nil Option"},
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
