package forge

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/google/uuid"
)

// Environment variables read by [FromEnv]. The first two are the Python
// library's names, so both languages share one deployment configuration.
const (
	// EnvNamespace names the namespace (a UUID, or any other string mapped
	// to UUIDv5(NameSpaceDNS, s)).
	EnvNamespace = "UUID_FORGE_NAMESPACE"
	// EnvSalt holds the secret: the HMAC key of the keyed scheme, or the
	// salt of the python scheme.
	EnvSalt = "UUID_FORGE_SALT"
	// EnvScheme selects the scheme: "v5", "keyed" (aliases "v8", "hmac")
	// or "python". Unset: "keyed" when a salt is set, "v5" otherwise.
	EnvScheme = "UUID_FORGE_SCHEME"
)

// SecretBytes is the number of random bytes in a secret made by [NewSecret].
const SecretBytes = 32

// NewSecret returns a new random secret: [SecretBytes] bytes from
// crypto/rand, URL-safe base64 without padding (43 characters), the same
// shape as the Python library's generate_salt().
func NewSecret() (string, error) {
	b := make([]byte, SecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", errorf("new secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Config is a generator configuration as read from the environment. No
// representation of it (fmt verbs, JSON, XML, gob, slog) shows the secret:
// see [Secret]. The zero Config has no namespace. A Config is a plain
// value, safe to copy and to read concurrently.
type Config struct {
	// Namespace is the namespace string as given ([EnvNamespace]); see
	// [New], and [Config.Generator] under [SchemePython], for how it maps
	// to a UUID. Empty: unset.
	Namespace string
	// Secret is the keyed scheme's HMAC key or the python scheme's salt
	// ([EnvSalt]); the zero Secret is none.
	Secret Secret
	// Scheme is the scheme [Config.Generator] uses ([EnvScheme]).
	// [ConfigFromEnv] sets it to [SchemeKeyed] when a secret is set and
	// [SchemeV5] otherwise, unless the variable names one; the zero value
	// is [SchemeV5].
	Scheme Scheme
}

// String describes the configuration without its secret.
func (c Config) String() string {
	return fmt.Sprintf("forge.Config{namespace: %q, scheme: %s, secret: %s}", c.Namespace, c.Scheme, c.Secret.Fingerprint())
}

// GoString is used by %#v; it never shows the secret.
func (c Config) GoString() string { return c.String() }

// Format makes every fmt verb print [Config.String].
func (c Config) Format(f fmt.State, verb rune) { io.WriteString(f, c.String()) }

// LogValue describes the configuration to log/slog without its secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("namespace", c.Namespace), slog.String("scheme", c.Scheme.String()),
		slog.String("secret", c.Secret.Fingerprint()))
}

// ConfigFromEnv reads [EnvNamespace], [EnvSalt] and [EnvScheme] with
// getenv (os.Getenv when nil). An unknown scheme is an error; a weak secret
// is an error of [Config.Generator] under the keyed scheme (check a python
// salt with c.Secret.Check()).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Config{Namespace: getenv(EnvNamespace), Secret: SecretFromString(getenv(EnvSalt))}
	switch s := getenv(EnvScheme); {
	case s != "":
		sc, err := ParseScheme(s)
		if err != nil {
			return Config{}, errorf("%s: %w", EnvScheme, err)
		}
		c.Scheme = sc
	case !c.Secret.IsZero():
		c.Scheme = SchemeKeyed
	default:
		c.Scheme = SchemeV5
	}
	return c, nil
}

// Generator builds the generator that c describes, with opts applied after
// the configuration (so they override it). Under [SchemePython] the
// namespace follows the Python library's load_config_from_env: unset means
// uuid.NameSpaceDNS, any value (even a UUID) means UUIDv5(NameSpaceDNS,
// value). Under the other schemes the namespace rule of [New] applies and
// an unset namespace is an error.
func (c Config) Generator(opts ...Option) (*Generator, error) {
	ns := c.Namespace
	if c.Scheme == SchemePython {
		if ns == "" {
			ns = uuid.NameSpaceDNS.String()
		} else {
			ns = uuid.NewSHA1(uuid.NameSpaceDNS, []byte(ns)).String()
		}
	}
	all := append([]Option{WithScheme(c.Scheme), WithSecret(c.Secret.reveal())}, opts...)
	g, err := New(ns, all...)
	if err != nil {
		if errors.Is(err, ErrEmptyNamespace) {
			return nil, errorf("%w (set %s)", err, EnvNamespace)
		}
		if errors.Is(err, ErrWeakSecret) {
			return nil, errorf("%s: %w", EnvSalt, ErrWeakSecret)
		}
		return nil, err
	}
	return g, nil
}

// FromEnv returns the generator configured by [EnvNamespace], [EnvSalt]
// and [EnvScheme]; see [ConfigFromEnv] and [Config.Generator].
func FromEnv(opts ...Option) (*Generator, error) {
	c, err := ConfigFromEnv(nil)
	if err != nil {
		return nil, err
	}
	return c.Generator(opts...)
}
