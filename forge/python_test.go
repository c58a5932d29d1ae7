package forge

import (
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"
)

type pyVectors struct {
	Vectors  []pyVector   `json:"vectors"`
	Prefixed []pyPrefixed `json:"prefixed"`
}

type pyNamespace struct {
	Kind  string  `json:"kind"`
	Value *string `json:"value"`
}

type pyVector struct {
	Namespace  pyNamespace                  `json:"namespace"`
	Salt       json.RawMessage              `json:"salt"`
	EntityType json.RawMessage              `json:"entity_type"`
	Args       []map[string]json.RawMessage `json:"args"`
	Kwargs     [][2]json.RawMessage         `json:"kwargs"`
	UUID       string                       `json:"uuid"`
}

type pyPrefixed struct {
	pyVector
	Prefix    *string `json:"prefix"`
	Separator string  `json:"separator"`
	ID        string  `json:"id"`
}

// unquoteWTF8 decodes a JSON string literal, keeping lone surrogate escapes
// as their WTF-8 bytes (the Python side may hold such strings).
func unquoteWTF8(raw json.RawMessage) (string, error) {
	s := string(raw)
	if s == "null" {
		return "", nil
	}
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", fmt.Errorf("not a JSON string: %s", s)
	}
	s = s[1 : len(s)-1]
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			i++
			continue
		}
		i++
		switch s[i] {
		case 'u':
			v, err := strconv.ParseUint(s[i+1:i+5], 16, 16)
			if err != nil {
				return "", err
			}
			i += 5
			r := rune(v)
			if utf16.IsSurrogate(r) && r < 0xdc00 && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
				if v2, err := strconv.ParseUint(s[i+2:i+6], 16, 16); err == nil {
					if r2 := utf16.DecodeRune(r, rune(v2)); r2 != utf8.RuneError {
						b.WriteRune(r2)
						i += 6
						continue
					}
				}
			}
			if utf16.IsSurrogate(r) { // lone surrogate: WTF-8
				b.WriteByte(byte(0xe0 | r>>12))
				b.WriteByte(byte(0x80 | (r>>6)&0x3f))
				b.WriteByte(byte(0x80 | r&0x3f))
				continue
			}
			b.WriteRune(r)
		default:
			var out string
			if err := json.Unmarshal([]byte(`"\`+s[i:i+1]+`"`), &out); err != nil {
				return "", err
			}
			b.WriteString(out)
			i++
		}
	}
	return b.String(), nil
}

func decodePyValue(t *testing.T, v map[string]json.RawMessage) any {
	t.Helper()
	if len(v) != 1 {
		t.Fatalf("typed value with %d keys: %v", len(v), v)
	}
	for typ, raw := range v {
		switch typ {
		case "str":
			s, err := unquoteWTF8(raw)
			if err != nil {
				t.Fatalf("str %s: %v", raw, err)
			}
			return s
		case "int":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("int %s: %v", raw, err)
			}
			b, ok := new(big.Int).SetString(s, 10)
			if !ok {
				t.Fatalf("int %q is not decimal", s)
			}
			if b.IsInt64() {
				return b.Int64()
			}
			return b
		case "float":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("float %s: %v", raw, err)
			}
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("float %q: %v", s, err)
			}
			return f
		case "bool":
			var b bool
			if err := json.Unmarshal(raw, &b); err != nil {
				t.Fatalf("bool %s: %v", raw, err)
			}
			return b
		case "none":
			return nil
		default:
			t.Fatalf("unknown value type %q", typ)
		}
	}
	return nil
}

func (v pyVector) generator(t *testing.T) *Generator {
	t.Helper()
	var ns uuid.UUID
	switch v.Namespace.Kind {
	case "dns", "":
		ns = uuid.NameSpaceDNS
	case "domain":
		ns = uuid.NewSHA1(uuid.NameSpaceDNS, []byte(*v.Namespace.Value))
	case "uuid":
		ns = uuid.MustParse(*v.Namespace.Value)
	default:
		t.Fatalf("unknown namespace kind %q", v.Namespace.Kind)
	}
	salt, err := unquoteWTF8(v.Salt)
	if err != nil {
		t.Fatalf("salt: %v", err)
	}
	return MustNew(ns.String(), WithScheme(SchemePython), WithSecret(salt))
}

// id returns the UUID of the vector's call and the Python name it hashes.
func (v pyVector) id(t *testing.T) (uuid.UUID, string, error) {
	t.Helper()
	entity, err := unquoteWTF8(v.EntityType)
	if err != nil {
		t.Fatalf("entity_type: %v", err)
	}
	parts := []any{entity}
	for _, a := range v.Args {
		parts = append(parts, decodePyValue(t, a))
	}
	if len(v.Kwargs) > 0 {
		kw := Kwargs{}
		for _, kv := range v.Kwargs {
			k, err := unquoteWTF8(kv[0])
			if err != nil {
				t.Fatalf("kwarg name: %v", err)
			}
			var typed map[string]json.RawMessage
			if err := json.Unmarshal(kv[1], &typed); err != nil {
				t.Fatalf("kwarg %s: %v", k, err)
			}
			kw[k] = decodePyValue(t, typed)
		}
		parts = append(parts, kw)
	}
	salt, _ := unquoteWTF8(v.Salt)
	var kwm map[string]any
	if len(v.Kwargs) > 0 {
		kwm = parts[len(parts)-1].(Kwargs)
		parts = parts[:len(parts)-1]
	}
	name, _ := PythonName(entity, salt, parts[1:], kwm)
	u, err := v.generator(t).PythonID(entity, parts[1:], kwm)
	return u, string(name), err
}

// pyVectorsPath returns FORGE_PY_VECTORS, or the copy in testdata. A
// relative FORGE_PY_VECTORS that does not exist from the package directory
// (where tests run) is tried from the module root too.
func pyVectorsPath() string {
	p := os.Getenv("FORGE_PY_VECTORS")
	if p == "" {
		return filepath.Join("testdata", "uuid-forge-python.json")
	}
	if _, err := os.Stat(p); err != nil && !filepath.IsAbs(p) {
		if _, err := os.Stat(filepath.Join("..", p)); err == nil {
			return filepath.Join("..", p)
		}
	}
	return p
}

// TestPythonCompat checks every reference output of the Python library.
func TestPythonCompat(t *testing.T) {
	path := pyVectorsPath()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var vs pyVectors
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if len(vs.Vectors)+len(vs.Prefixed) == 0 {
		t.Fatalf("%s holds no vectors", path)
	}
	checked := 0
	for i, v := range vs.Vectors {
		got, name, err := v.id(t)
		if err != nil {
			t.Errorf("vector %d (%s %s): %v", i, v.EntityType, mustJSON(v.Args), err)
		} else if got.String() != strings.ToLower(v.UUID) {
			t.Errorf("vector %d: entity %s args %s kwargs %s: got %s, want %s (name %+q)", i, v.EntityType, mustJSON(v.Args), mustJSON(v.Kwargs), got, v.UUID, name)
		}
		checked++
	}
	for i, p := range vs.Prefixed {
		u, _, err := p.id(t)
		if err != nil {
			t.Errorf("prefixed %d: %v", i, err)
			checked++
			continue
		}
		prefix := ""
		if p.Prefix != nil {
			prefix = *p.Prefix
		}
		if got := Prefix(prefix, p.Separator, u); got != p.ID {
			t.Errorf("prefixed %d: Prefix(%q, %q, %s) = %q, want %q", i, prefix, p.Separator, u, got, p.ID)
		}
		back, err := Extract(p.ID, p.Separator)
		if err != nil {
			t.Errorf("prefixed %d: Extract(%q, %q): %v", i, p.ID, p.Separator, err)
		} else if back != u {
			t.Errorf("prefixed %d: Extract(%q, %q) = %s, want %s", i, p.ID, p.Separator, back, u)
		}
		checked++
	}
	t.Logf("checked %d vectors (%d plain, %d prefixed) from %s", checked, len(vs.Vectors), len(vs.Prefixed), path)
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
