package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
)

var keyTests = []struct {
	name  string
	key   dedupe.Key
	valid bool
}{
	{"ok", dedupe.Key{Scope: "billing", ID: uuid.MustParse("2ed6657d-e927-568b-95e1-2665a8aea6a2")}, true},
	{"unicode scope", dedupe.Key{Scope: "facturación/é", ID: uuid.New()}, true},
	{"longest scope", dedupe.Key{Scope: strings.Repeat("x", dedupe.MaxScopeLen), ID: uuid.New()}, true},
	{"empty scope", dedupe.Key{ID: uuid.New()}, false},
	{"scope too long", dedupe.Key{Scope: strings.Repeat("x", dedupe.MaxScopeLen+1), ID: uuid.New()}, false},
	{"invalid UTF-8", dedupe.Key{Scope: "\xc3\x28", ID: uuid.New()}, false},
	{"NUL", dedupe.Key{Scope: "a\x00", ID: uuid.New()}, false},
	{"nil ID", dedupe.Key{Scope: "billing"}, false},
}

func TestKeyValidate(t *testing.T) {
	for _, tt := range keyTests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.key.Validate()
			if (err == nil) != tt.valid {
				t.Fatalf("Validate(%q) = %v, want valid %v", tt.key, err, tt.valid)
			}
			if err != nil && !errors.Is(fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", err)), dedupe.ErrInvalidKey) {
				t.Fatalf("Validate error %v does not wrap ErrInvalidKey", err)
			}
		})
	}
}

func FuzzKeyValidate(f *testing.F) {
	for _, tt := range keyTests {
		f.Add(tt.key.Scope, tt.key.ID[:])
	}
	m := newMemory(f)
	f.Fuzz(func(t *testing.T, scope string, id []byte) {
		var k dedupe.Key
		k.Scope = scope
		copy(k.ID[:], id)
		err := k.Validate()
		want := scope != "" && len(scope) <= dedupe.MaxScopeLen && utf8.ValidString(scope) &&
			!strings.ContainsRune(scope, 0) && k.ID != uuid.Nil
		if (err == nil) != want {
			t.Fatalf("Validate(%q) = %v, want valid %v", k, err, want)
		}
		// The memory store agrees with Validate.
		_, cerr := m.Claim(context.Background(), k, time.Minute)
		if errors.Is(cerr, dedupe.ErrInvalidKey) != (err != nil) {
			t.Fatalf("Claim(%q) = %v, Validate = %v", k, cerr, err)
		}
	})
}

func TestKeyString(t *testing.T) {
	k := dedupe.Key{Scope: "billing", ID: uuid.MustParse("2ed6657d-e927-568b-95e1-2665a8aea6a2")}
	if got, want := k.String(), "billing/2ed6657d-e927-568b-95e1-2665a8aea6a2"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[dedupe.Status]string{
		dedupe.Acquired: "acquired", dedupe.Duplicate: "duplicate", dedupe.InFlight: "in flight", 0: "Status(0)", 9: "Status(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", s, got, want)
		}
	}
}

func TestDurations(t *testing.T) {
	const def = 5 * time.Second
	tests := []struct {
		name      string
		f         func(d, def time.Duration) (time.Duration, error)
		in, want  time.Duration
		wantError bool
	}{
		{"lease 0", dedupe.LeaseOrDefault, 0, def, false},
		{"lease set", dedupe.LeaseOrDefault, time.Second, time.Second, false},
		{"lease negative", dedupe.LeaseOrDefault, -time.Second, 0, true},
		{"lease Forever", dedupe.LeaseOrDefault, dedupe.Forever, 0, true},
		{"retention 0", dedupe.RetentionOrDefault, 0, def, false},
		{"retention set", dedupe.RetentionOrDefault, time.Hour, time.Hour, false},
		{"retention Forever", dedupe.RetentionOrDefault, dedupe.Forever, dedupe.Forever, false},
		{"retention negative", dedupe.RetentionOrDefault, -time.Hour, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f(tt.in, def)
			if tt.wantError {
				if !errors.Is(err, dedupe.ErrInvalidDuration) {
					t.Fatalf("error %v, want ErrInvalidDuration", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("= %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestCheckClaim(t *testing.T) {
	k := dedupe.Key{Scope: "s", ID: uuid.New()}
	tests := []struct {
		name string
		c    dedupe.Claim
		want error
	}{
		{"acquired", dedupe.Claim{Key: k, Status: dedupe.Acquired, Token: 1}, nil},
		{"zero", dedupe.Claim{}, dedupe.ErrNotAcquired},
		{"duplicate", dedupe.Claim{Key: k, Status: dedupe.Duplicate}, dedupe.ErrNotAcquired},
		{"in flight", dedupe.Claim{Key: k, Status: dedupe.InFlight}, dedupe.ErrNotAcquired},
		{"token 0", dedupe.Claim{Key: k, Status: dedupe.Acquired}, dedupe.ErrNotAcquired},
		{"invalid key", dedupe.Claim{Key: dedupe.Key{ID: k.ID}, Status: dedupe.Acquired, Token: 1}, dedupe.ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dedupe.CheckClaim(tt.c)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CheckClaim = %v, want %v", err, tt.want)
			}
		})
	}
}
