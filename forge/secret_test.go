package forge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const strongSecret = "example-secret-do-not-use"

// TestKeyedRefusesWeakSecret checks that the keyed scheme refuses secrets
// shorter than MinSecretBytes, whichever way the secret arrives.
func TestKeyedRefusesWeakSecret(t *testing.T) {
	for _, s := range []string{"a", " ", "abcd", "s3cr3t", strings.Repeat("x", MinSecretBytes-1)} {
		if g, err := New("x", WithSecret(s)); !errors.Is(err, ErrWeakSecret) {
			t.Errorf("WithSecret(%q): %v, %v; want ErrWeakSecret", s, g, err)
		} else if !strings.Contains(err.Error(), "WithSecret") || strings.Contains(err.Error(), s+" ") {
			t.Errorf("error %q does not name WithSecret, or shows the secret", err)
		}
		if _, err := New("x", WithScheme(SchemeKeyed), WithSecret(s)); !errors.Is(err, ErrWeakSecret) {
			t.Errorf("explicit keyed, %q: %v", s, err)
		}
		c := Config{Namespace: "x", Secret: SecretFromString(s), Scheme: SchemeKeyed}
		if _, err := c.Generator(); !errors.Is(err, ErrWeakSecret) {
			t.Errorf("Config.Generator, %q: %v", s, err)
		}
		t.Setenv(EnvNamespace, "x")
		t.Setenv(EnvSalt, s)
		t.Setenv(EnvScheme, "")
		if _, err := FromEnv(); !errors.Is(err, ErrWeakSecret) {
			t.Errorf("FromEnv, %q: %v", s, err)
		}
		if err := CheckSecret(s); !errors.Is(err, ErrWeakSecret) {
			t.Errorf("CheckSecret(%q) = %v", s, err)
		}
	}
	for _, s := range []string{strings.Repeat("x", MinSecretBytes), strongSecret} {
		if _, err := New("x", WithSecret(s)); err != nil {
			t.Errorf("WithSecret(%q): %v", s, err)
		}
		if err := CheckSecret(s); err != nil {
			t.Errorf("CheckSecret(%q) = %v", s, err)
		}
	}
	fresh, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSecret(fresh); err != nil {
		t.Errorf("a NewSecret is weak: %v", err)
	}
	if err := CheckSecret(""); !errors.Is(err, ErrNoSecret) {
		t.Errorf("CheckSecret(\"\") = %v", err)
	}
}

// TestPythonSaltStaysCompatible checks that the python scheme accepts a
// short salt (the Python library does; the salt is part of the hashed
// name) and that the weakness can be checked.
func TestPythonSaltStaysCompatible(t *testing.T) {
	g, err := New("mycompany.com", WithScheme(SchemePython), WithSecret("s3cr3t"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckSecret(); !errors.Is(err, ErrWeakSecret) {
		t.Errorf("Generator.CheckSecret = %v, want ErrWeakSecret", err)
	}
	c := Config{Secret: SecretFromString("s3cr3t"), Scheme: SchemePython}
	if err := c.Secret.Check(); !errors.Is(err, ErrWeakSecret) {
		t.Errorf("Secret.Check = %v, want ErrWeakSecret", err)
	}
	if _, err := c.Generator(); err != nil {
		t.Fatal(err)
	}
	if err := MustNew("x", WithSecret(strongSecret)).CheckSecret(); err != nil {
		t.Errorf("strong secret: %v", err)
	}
}

// TestFingerprintIsKeyed checks SPEC §7: the fingerprint is an HMAC of a
// fixed label under the secret, so testing a guess against it costs as
// much as testing it against a keyed ID (a plain hash could be tested
// faster, and precomputed).
func TestFingerprintIsKeyed(t *testing.T) {
	for _, s := range []string{strongSecret, "s3cr3t", strings.Repeat("k", 100)} {
		m := hmac.New(sha256.New, []byte(s))
		m.Write([]byte("uuid-forge fingerprint"))
		want := hex.EncodeToString(m.Sum(nil)[:8])
		if got := Fingerprint(s); got != want {
			t.Errorf("Fingerprint(%q) = %s, want %s", s, got, want)
		}
		if got := SecretFromString(s).Fingerprint(); got != want {
			t.Errorf("Secret.Fingerprint = %s, want %s", got, want)
		}
		g := MustNew("x", WithScheme(SchemePython), WithSecret(s))
		if got := g.Fingerprint(); got != want {
			t.Errorf("Generator.Fingerprint = %s, want %s", got, want)
		}
	}
	if Fingerprint("") != "none" || MustNew("x").Fingerprint() != "none" || (Secret{}).Fingerprint() != "none" {
		t.Error("no secret must fingerprint as none")
	}
}

// leakNeedles returns the forms in which secret, or the HMAC pads derived
// from it (key XOR 0x36 and 0x5c), could appear in output.
func leakNeedles(secret string) []string {
	forms := func(b []byte) []string {
		dec := fmt.Sprint(b) // [115 51 ...]
		return []string{string(b), hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
			base64.StdEncoding.EncodeToString(b)[:len(b)*4/3-2], dec[1 : len(dec)-1], fmt.Sprintf("%q", b)[1 : len(b)+1]}
	}
	key := []byte(secret)
	ipad, opad := make([]byte, len(key)), make([]byte, len(key))
	for i, k := range key {
		ipad[i], opad[i] = k^0x36, k^0x5c
	}
	return append(append(forms(key), forms(ipad)...), forms(opad)...)
}

// xmlHolder wraps a value for encoding/xml, which needs a named type.
type xmlHolder struct {
	XMLName xml.Name `xml:"h"`
	V       any
}

// CfgHolder holds configurations and generators every way a user might.
type CfgHolder struct {
	Cfg    Config
	CfgPtr *Config
	Gen    Generator
	GenPtr *Generator
	Sec    Secret
	cfg    Config
	cfgPtr *Config
	gen    Generator
	genPtr *Generator
	sec    Secret
}

// TestSecretNeverLeaks tries every representation of a Config, a Secret
// and a Generator (fmt verbs, JSON, XML, text, gob, slog), held by value
// and by pointer in exported and unexported fields, and checks that none
// contains the secret or anything it can be computed from.
func TestSecretNeverLeaks(t *testing.T) {
	for _, scheme := range []Scheme{SchemeKeyed, SchemePython} {
		cfg := Config{Namespace: "n", Secret: SecretFromString(strongSecret), Scheme: scheme}
		g, err := cfg.Generator()
		if err != nil {
			t.Fatal(err)
		}
		h := CfgHolder{cfg, &cfg, *g, g, cfg.Secret, cfg, &cfg, *g, g, cfg.Secret}
		values := map[string]any{"Config": cfg, "*Config": &cfg, "Generator": *g, "*Generator": g,
			"Secret": cfg.Secret, "*Secret": &cfg.Secret, "holder": h, "*holder": &h, "[]any": []any{cfg, g, h}}
		var outputs []string
		add := func(what string, b []byte, err error) {
			outputs = append(outputs, what+": "+string(b))
			if err != nil {
				outputs = append(outputs, what+" error: "+err.Error())
			}
		}
		for name, v := range values {
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
				add(name+" "+verb, []byte(fmt.Sprintf(verb, v)), nil)
			}
			b, err := json.Marshal(v)
			add(name+" json", b, err)
			b, err = xml.Marshal(xmlHolder{V: v})
			add(name+" xml", b, err)
			var gb bytes.Buffer
			err = gob.NewEncoder(&gb).Encode(v)
			add(name+" gob", gb.Bytes(), err)
			if tm, ok := v.(interface{ MarshalText() ([]byte, error) }); ok {
				b, err := tm.MarshalText()
				add(name+" text", b, err)
			}
			var jl, tl bytes.Buffer
			slog.New(slog.NewJSONHandler(&jl, nil)).Info("m", "v", v, slog.Group("g", "v", v))
			slog.New(slog.NewTextHandler(&tl, nil)).Info("m", "v", v, slog.Group("g", "v", v))
			add(name+" slog json", jl.Bytes(), nil)
			add(name+" slog text", tl.Bytes(), nil)
		}
		for _, out := range outputs {
			for _, needle := range leakNeedles(strongSecret) {
				if strings.Contains(out, needle) {
					t.Errorf("%s: output contains %q:\n%s", scheme, needle, out)
				}
			}
		}
		// The fingerprint is what shows (the test is not vacuous).
		if s := fmt.Sprint(h); !strings.Contains(fmt.Sprint(cfg)+fmt.Sprint(g), g.Fingerprint()) || s == "" {
			t.Errorf("Config and Generator do not show the fingerprint: %v %v", cfg, g)
		}
	}
}
