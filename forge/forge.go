package forge

import (
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Scheme selects how a [Generator] turns a canonical name into a UUID.
type Scheme int

const (
	// SchemeV5 is the default: RFC 9562 UUIDv5(namespace, canonical name).
	SchemeV5 Scheme = iota
	// SchemeKeyed is a UUIDv8 made of the first 16 bytes of
	// HMAC-SHA256(secret, namespace bytes ‖ canonical name), with the
	// version and variant bits set. It needs a secret.
	SchemeKeyed
	// SchemePython reproduces uuid-forge 0.1.x (Python)
	// generate_uuid_only(entity_type, *args, **kwargs): the first part is
	// the entity type, the secret (if any) is the Python salt.
	SchemePython
)

// String returns the scheme's configuration name: "v5", "keyed" or "python".
func (s Scheme) String() string {
	switch s {
	case SchemeV5:
		return "v5"
	case SchemeKeyed:
		return "keyed"
	case SchemePython:
		return "python"
	}
	return fmt.Sprintf("Scheme(%d)", int(s))
}

// ParseScheme parses a scheme name as accepted in UUID_FORGE_SCHEME:
// "v5", "keyed" (alias "v8", "hmac") or "python".
func ParseScheme(s string) (Scheme, error) {
	switch s {
	case "v5":
		return SchemeV5, nil
	case "keyed", "v8", "hmac":
		return SchemeKeyed, nil
	case "python":
		return SchemePython, nil
	}
	return 0, errorf("scheme %q: %w", s, ErrUnknownScheme)
}

var (
	// ErrEmptyNamespace is returned by [New] for an empty namespace.
	ErrEmptyNamespace = errors.New("forge: empty namespace")
	// ErrUnknownScheme is returned for a scheme name that is not known.
	ErrUnknownScheme = errors.New("forge: unknown scheme (want v5, keyed or python)")
	// ErrNoSecret is returned when the keyed scheme is chosen without a
	// secret, and by [CheckSecret] for the empty secret.
	ErrNoSecret = errors.New("forge: keyed scheme needs a secret")
)

type config struct {
	secret    string
	hasSecret bool
	scheme    Scheme
	hasScheme bool
}

// Option configures a [Generator] in [New], which validates it: a bad
// value is an error from New that names the option.
type Option func(*config) error

// WithSecret sets the secret. Without [WithScheme] it selects
// [SchemeKeyed], where the secret is the HMAC key and must be at least
// [MinSecretBytes] long ([ErrWeakSecret]; make one with [NewSecret]); under
// [SchemePython] it is the Python library's salt, of any length (see
// [CheckSecret]); under [SchemeV5] (chosen with WithScheme) it is ignored.
// Default: no secret. An empty secret is the same as none. A secret that
// is not valid UTF-8 is an error.
func WithSecret(secret string) Option {
	return func(c *config) error {
		if !utf8.ValidString(secret) {
			return errorf("WithSecret: %w", ErrInvalidUTF8)
		}
		c.secret = secret
		c.hasSecret = secret != ""
		return nil
	}
}

// WithScheme selects the scheme explicitly, overriding the choice made
// from the secret. Default: [SchemeV5] without a secret, [SchemeKeyed]
// with one. [SchemeKeyed] without a secret is an error in [New], and so is
// a Scheme value that is not one of the constants.
func WithScheme(s Scheme) Option {
	return func(c *config) error {
		switch s {
		case SchemeV5, SchemeKeyed, SchemePython:
		default:
			return errorf("WithScheme: scheme %d: %w", int(s), ErrUnknownScheme)
		}
		c.scheme = s
		c.hasScheme = true
		return nil
	}
}

// Generator computes deterministic UUIDs from business data within one
// namespace. It is immutable and safe for concurrent use. No
// representation of it shows the secret or anything computed from it
// other than its [Generator.Fingerprint]: fmt verbs and slog print
// [Generator.String], encoding/json and encoding/gob see no exported
// field, and the secret and its HMAC pads are held by a closure, so that a
// Generator printed as an unexported field of another struct (where fmt
// cannot call its methods), or by a reflection-based dumper, shows an
// address at most. The zero Generator is usable: the v5 scheme in the Nil
// namespace (build real ones with [New]).
type Generator struct {
	ns     uuid.UUID
	scheme Scheme
	fp     string           // fingerprint of the secret, "none" without one
	key    func() *keyState // nil without a secret
}

// keyState is the secret material of a generator.
type keyState struct {
	secret string                      // HMAC key (keyed) or salt (python)
	prefix [sha256.BlockSize + 16]byte // keyed: key⊕ipad ‖ namespace, hashed before the name
	opad   [sha256.BlockSize]byte      // keyed: key⊕opad
}

// New returns a Generator for namespace. A namespace that parses as a UUID
// is used as is; any other non-empty string s maps to UUIDv5(NameSpaceDNS,
// s), like Python's Namespace("mycompany.com"). An empty namespace is an
// error ([ErrEmptyNamespace]), and so is one that is not valid UTF-8. The
// options are validated here: see each for its errors. Nil options are
// ignored, as in the module's other constructors.
func New(namespace string, opts ...Option) (*Generator, error) {
	ns, err := ParseNamespace(namespace)
	if err != nil {
		return nil, err
	}
	var c config
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	scheme := SchemeV5
	if c.hasScheme {
		scheme = c.scheme
	} else if c.hasSecret {
		scheme = SchemeKeyed
	}
	if scheme == SchemeKeyed {
		if !c.hasSecret {
			return nil, ErrNoSecret
		}
		if err := CheckSecret(c.secret); err != nil {
			return nil, errorf("WithSecret: keyed scheme: %w", err)
		}
	}
	g := &Generator{ns: ns, scheme: scheme, fp: "none"}
	if scheme == SchemeV5 || !c.hasSecret { // v5 ignores a secret; keep none so Fingerprint says so
		return g, nil
	}
	k := &keyState{secret: c.secret}
	g.key = func() *keyState { return k }
	g.fp = Fingerprint(c.secret)
	if scheme == SchemeKeyed {
		// Precompute the HMAC pads so that ID hashes a stack buffer with
		// sha256.Sum256 instead of allocating an hmac state.
		key := []byte(c.secret)
		if len(key) > sha256.BlockSize {
			sum := sha256.Sum256(key)
			key = sum[:]
		}
		for i := range sha256.BlockSize {
			var b byte
			if i < len(key) {
				b = key[i]
			}
			k.prefix[i] = b ^ 0x36
			k.opad[i] = b ^ 0x5c
		}
		copy(k.prefix[sha256.BlockSize:], g.ns[:])
	}
	return g, nil
}

// MustNew is like [New] but panics on error. Use it for package-level
// generators with constant arguments.
func MustNew(namespace string, opts ...Option) *Generator {
	g, err := New(namespace, opts...)
	if err != nil {
		panic(err)
	}
	return g
}

// ParseNamespace returns the namespace UUID for s, by the rule of [New].
// A namespace that is not valid UTF-8 is an error: SPEC hashes its UTF-8
// bytes, which other languages cannot hold otherwise.
func ParseNamespace(s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, ErrEmptyNamespace
	}
	if !utf8.ValidString(s) {
		return uuid.Nil, errorf("namespace %q: %w", s, ErrInvalidUTF8)
	}
	if len(s) == 36 || len(s) == 38 || len(s) == 32 || len(s) == 45 {
		if u, err := uuid.Parse(s); err == nil {
			return u, nil
		}
	}
	return uuid.NewSHA1(uuid.NameSpaceDNS, []byte(s)), nil
}

// Namespace returns the namespace UUID.
func (g *Generator) Namespace() uuid.UUID { return g.ns }

// Scheme returns the scheme the generator uses.
func (g *Generator) Scheme() Scheme { return g.scheme }

// ID returns the UUID of parts. Under [SchemeV5] and [SchemeKeyed] the
// name is [Canonical](parts...); under [SchemePython] the first part is the
// entity type and the rest are Python arguments (see [Generator.PythonID]).
func (g *Generator) ID(parts ...any) (uuid.UUID, error) {
	if g.scheme == SchemePython {
		return g.pythonParts(parts)
	}
	// Fast path: simple parts are encoded into a stack buffer that already
	// holds the hash prefix (namespace, or HMAC inner pad and namespace).
	var arr [256]byte
	buf := append(arr[:0], g.hashPrefix()...)
	buf, ok, err := appendSimpleParts(buf, parts)
	if err != nil {
		return uuid.Nil, err
	}
	if ok {
		return g.sum(buf), nil
	}
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	b := append((*bp)[:0], g.hashPrefix()...)
	b, err = appendCanonical(b, parts)
	if err != nil {
		return uuid.Nil, err
	}
	*bp = b
	return g.sum(b), nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func putBuf(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		bufPool.Put(bp)
	}
}

// MustID is like [Generator.ID] but panics on error. Use it only with parts
// whose encoding cannot fail (strings that are valid UTF-8, safe integers).
func (g *Generator) MustID(parts ...any) uuid.UUID {
	u, err := g.ID(parts...)
	if err != nil {
		panic(err)
	}
	return u
}

// FromName returns the UUID of an already canonical name (as returned by
// [Canonical]) under the generator's v5 or keyed scheme. Under
// [SchemePython] the name is the Python name ([PythonName]), hashed with
// UUIDv5.
func (g *Generator) FromName(name []byte) uuid.UUID {
	prefix := g.hashPrefix()
	if len(prefix)+len(name) <= 512 {
		var arr [512]byte
		return g.sum(append(append(arr[:0], prefix...), name...))
	}
	return g.sum(append(append(make([]byte, 0, len(prefix)+len(name)), prefix...), name...))
}

// hashPrefix returns the bytes hashed before the name.
func (g *Generator) hashPrefix() []byte {
	if g.scheme == SchemeKeyed {
		return g.key().prefix[:]
	}
	return g.ns[:]
}

// sum hashes b = prefix ‖ name into the UUID.
func (g *Generator) sum(b []byte) uuid.UUID {
	var u uuid.UUID
	if g.scheme == SchemeKeyed {
		// HMAC-SHA256 = SHA256(key⊕opad ‖ SHA256(key⊕ipad ‖ message)).
		inner := sha256.Sum256(b)
		var outer [sha256.BlockSize + sha256.Size]byte
		copy(outer[:], g.key().opad[:])
		copy(outer[sha256.BlockSize:], inner[:])
		mac := sha256.Sum256(outer[:])
		copy(u[:], mac[:16])
		u[6] = u[6]&0x0f | 0x80 // version 8
		u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
		return u
	}
	sum := sha1.Sum(b)
	copy(u[:], sum[:16])
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80
	return u
}

// Fingerprint returns the [Fingerprint] of the secret, "none" without one
// (and under [SchemeV5], which ignores a secret). Safe to log.
func (g *Generator) Fingerprint() string {
	if g.fp == "" { // zero Generator
		return "none"
	}
	return g.fp
}

// CheckSecret returns [CheckSecret] of the generator's secret: nil for the
// keyed scheme (New refuses weak secrets), [ErrWeakSecret] for a python
// salt shorter than [MinSecretBytes], [ErrNoSecret] without a secret.
func (g *Generator) CheckSecret() error {
	if g.key == nil {
		return ErrNoSecret
	}
	return CheckSecret(g.key().secret)
}

// String describes the generator without its secret.
func (g Generator) String() string {
	return fmt.Sprintf("forge.Generator{namespace: %s, scheme: %s, secret: %s}", g.ns, g.scheme, g.Fingerprint())
}

// GoString is used by %#v; it never shows the secret.
func (g Generator) GoString() string { return g.String() }

// Format implements fmt.Formatter so that every verb (%v, %+v, %s, %#v...)
// prints [Generator.String] and never the secret, for a Generator value as
// well as a pointer.
func (g Generator) Format(f fmt.State, verb rune) { io.WriteString(f, g.String()) }

// LogValue describes the generator to log/slog without its secret.
func (g Generator) LogValue() slog.Value {
	return slog.GroupValue(slog.String("namespace", g.ns.String()), slog.String("scheme", g.scheme.String()),
		slog.String("secret", g.Fingerprint()))
}
