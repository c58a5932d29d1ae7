package forge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// MinSecretBytes is the shortest secret, in bytes, that the keyed scheme
// accepts. A shorter one can be found by trying guesses against a single
// known ID; [NewSecret] makes 32 random bytes.
const MinSecretBytes = 16

// ErrWeakSecret is returned by [New] for a keyed-scheme secret shorter
// than [MinSecretBytes], and by [CheckSecret], [Secret.Check] and
// [Generator.CheckSecret] for such a secret under any scheme.
var ErrWeakSecret = errors.New("forge: secret shorter than 16 bytes; make one with NewSecret (forge new-secret)")

// CheckSecret reports whether secret is long enough to key IDs: nil for at
// least [MinSecretBytes] bytes, an error wrapping [ErrWeakSecret] for a
// shorter secret and [ErrNoSecret] for none. The keyed scheme refuses what
// it rejects. The python scheme accepts any salt, because the Python
// library does and its IDs must stay the same; a short salt there can be
// recovered from one (input, ID) pair, so check it with this function (the
// forge command warns).
func CheckSecret(secret string) error {
	switch {
	case secret == "":
		return ErrNoSecret
	case len(secret) < MinSecretBytes:
		return ErrWeakSecret
	}
	return nil
}

// fingerprintLabel is the message that Fingerprint authenticates.
const fingerprintLabel = "uuid-forge fingerprint"

// Fingerprint returns a short name for secret that is safe to log: the
// first 8 bytes, in lowercase hex, of HMAC-SHA256(key = secret, message =
// "uuid-forge fingerprint"), or "none" for the empty secret. Two
// deployments with the same fingerprint share the secret.
//
// An HMAC under the secret, rather than a plain hash of it, means that
// testing a guess against the fingerprint costs the same HMAC-SHA256 as
// testing it against one keyed ID, so the fingerprint helps nobody guess a
// secret faster than the IDs they have seen already. A deliberately slow
// KDF would not protect more (one ID is enough to test guesses at HMAC
// speed) and would make every String call slow; what protects the secret
// is its length ([MinSecretBytes]).
func Fingerprint(secret string) string {
	if secret == "" {
		return "none"
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(fingerprintLabel))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// Secret holds a secret (the keyed scheme's HMAC key, or the python
// scheme's salt) so that it never shows: every representation of a Secret
// (each fmt verb, JSON, XML, gob and text marshalling, slog) is
// "[fingerprint …]" (see [Fingerprint]) or "none". The value is held by a
// closure, which fmt prints as an address and reflection cannot look
// into, so a Secret printed as an unexported field of another struct
// (where fmt cannot call its methods), or dumped by a reflection-based
// printer, does not show it either. The zero Secret is no secret. Secrets
// are not comparable with ==; use [Secret.Equal]. A Secret is immutable and
// safe for concurrent use. Build one with [SecretFromString].
type Secret struct {
	get func() string // nil: no secret
}

// SecretFromString returns the Secret holding s; the empty string is no
// secret.
func SecretFromString(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{func() string { return s }}
}

// reveal returns the secret; only the package's hashing uses it.
func (s Secret) reveal() string {
	if s.get == nil {
		return ""
	}
	return s.get()
}

// IsZero reports whether s holds no secret.
func (s Secret) IsZero() bool { return s.get == nil }

// Equal reports whether s and t hold the same secret, in constant time.
func (s Secret) Equal(t Secret) bool {
	return hmac.Equal([]byte(s.reveal()), []byte(t.reveal()))
}

// Fingerprint returns the [Fingerprint] of the secret, "none" without one.
func (s Secret) Fingerprint() string { return Fingerprint(s.reveal()) }

// Check returns [CheckSecret] of the secret.
func (s Secret) Check() error { return CheckSecret(s.reveal()) }

// String returns "[fingerprint " + s.Fingerprint() + "]", or "none".
func (s Secret) String() string {
	if s.get == nil {
		return "none"
	}
	return "[fingerprint " + s.Fingerprint() + "]"
}

// GoString is used by %#v; it is [Secret.String].
func (s Secret) GoString() string { return s.String() }

// Format makes every fmt verb print [Secret.String].
func (s Secret) Format(f fmt.State, verb rune) { io.WriteString(f, s.String()) }

// MarshalText returns [Secret.String]; encoding/json, encoding/xml and
// encoding/gob use it, so none of them writes the secret. There is no
// UnmarshalText: a redacted Secret never silently becomes a secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue returns [Secret.String] for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
