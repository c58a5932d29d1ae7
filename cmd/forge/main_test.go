package main

import (
	"bytes"
	"encoding/base64"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uuidforge/uuidforge/forge"
)

// runCLI runs the command in-process with a fixed environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestIDMatchesLibrary(t *testing.T) {
	orders := forge.MustNew("orders")
	users := forge.MustNew("users")
	const secret = "example-secret-do-not-use"
	keyed := forge.MustNew("users", forge.WithSecret(secret))
	py := forge.MustNew(uuid.NewSHA1(uuid.NameSpaceDNS, []byte("mycompany.com")).String(), forge.WithScheme(forge.SchemePython), forge.WithSecret("s3cr3t"))
	pyBig, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"json parts", nil, []string{"id", "--namespace", "orders", "--json", `{"sku":"A","qty":2}`, "7"},
			orders.MustID(map[string]any{"qty": 2, "sku": "A"}, 7).String()},
		{"string parts", nil, []string{"id", "--namespace", "orders", "EUR", "12345"}, orders.MustID("EUR", "12345").String()},
		{"namespace from env", map[string]string{forge.EnvNamespace: "users"}, []string{"id", "john@example.com"}, users.MustID("john@example.com").String()},
		{"flag beats env", map[string]string{forge.EnvNamespace: "other"}, []string{"id", "--namespace", "users", "john@example.com"}, users.MustID("john@example.com").String()},
		{"salt from env means keyed", map[string]string{forge.EnvNamespace: "users", forge.EnvSalt: secret}, []string{"id", "john@example.com"}, keyed.MustID("john@example.com").String()},
		{"secret-env", map[string]string{"MY_KEY": secret}, []string{"id", "--namespace", "users", "--secret-env", "MY_KEY", "john@example.com"}, keyed.MustID("john@example.com").String()},
		{"scheme v5 from env ignores salt", map[string]string{forge.EnvNamespace: "users", forge.EnvSalt: "s3cr3t", forge.EnvScheme: "v5"}, []string{"id", "john@example.com"}, users.MustID("john@example.com").String()},
		{"prefix", nil, []string{"id", "--namespace", "users", "--prefix", "USR", "--sep", "_", "john@example.com"}, "USR_" + users.MustID("john@example.com").String()},
		{"dash parts after --", nil, []string{"id", "--namespace", "users", "--json", "--", "-5"}, users.MustID(-5).String()},
		{"python scheme", map[string]string{forge.EnvNamespace: "mycompany.com", forge.EnvSalt: "s3cr3t", forge.EnvScheme: "python"}, []string{"id", "--json", `"invoice"`, `"EUR"`, "123456789012345678901234567890", "1.5", "true", "null"},
			py.MustID("invoice", "EUR", pyBig, 1.5, true, nil).String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if out != tc.want+"\n" {
				t.Fatalf("stdout %q, want %q", out, tc.want+"\n")
			}
		})
	}
}

func TestErrors(t *testing.T) {
	ns := map[string]string{forge.EnvNamespace: "x"}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		code    int
		message string
	}{
		{"NaN", ns, []string{"id", "--json", "NaN"}, 1, "malformed JSON"},
		{"unsafe integer", ns, []string{"id", "--json", "9007199254740993"}, 1, "pass it as a string"},
		{"unsafe integer in object", ns, []string{"id", "--json", `{"n":12345678901234567890}`}, 1, "2^53-1"},
		{"malformed JSON", ns, []string{"id", "--json", `{"sku":`}, 1, "malformed JSON"},
		{"duplicate keys", ns, []string{"id", "--json", `{"a":1,"a":2}`}, 1, "duplicate"},
		{"empty namespace", nil, []string{"id", "a"}, 1, "empty namespace"},
		{"empty namespace flag", nil, []string{"id", "--namespace", "", "a"}, 1, "empty namespace"},
		{"missing secret variable", ns, []string{"id", "--secret-env", "NOPE", "a"}, 1, "NOPE"},
		{"keyed without secret", map[string]string{forge.EnvNamespace: "x", forge.EnvScheme: "keyed"}, []string{"id", "a"}, 1, "secret"},
		{"unknown scheme", ns, []string{"id", "--scheme", "v4", "a"}, 1, "unknown scheme"},
		{"invalid UTF-8", ns, []string{"id", "a\xff"}, 1, "UTF-8"},
		{"python object", map[string]string{forge.EnvScheme: "python"}, []string{"id", "--json", `"e"`, `{"a":1}`}, 1, "python scheme"},
		{"no parts", ns, []string{"id"}, 2, "at least one PART"},
		{"unknown flag", ns, []string{"id", "--nope", "a"}, 2, "not defined"},
		{"unknown command", nil, []string{"frobnicate"}, 2, "unknown command"},
		{"no command", nil, nil, 2, "usage"},
		{"extract garbage", nil, []string{"extract", "not-a-uuid"}, 1, `"not-a-uuid"`},
		{"extract wrong separator", nil, []string{"extract", "--sep", "_", "INV-e26b5311-223f-5793-9890-bdefaa567c5"}, 1, "INV-e26b5311"},
		{"extract arity", nil, []string{"extract"}, 2, "exactly one ID"},
		{"new-secret arity", nil, []string{"new-secret", "x"}, 2, "no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if out != "" {
				t.Fatalf("stdout %q on error", out)
			}
			if !strings.Contains(errOut, tc.message) {
				t.Fatalf("stderr %q does not mention %q", errOut, tc.message)
			}
		})
	}
}

func TestExtractInfoNewSecret(t *testing.T) {
	u := forge.MustNew("invoices").MustID("EUR", 12345)
	code, out, errOut := runCLI(t, nil, "extract", "INV-EUR-"+u.String())
	if code != 0 || out != u.String()+"\n" {
		t.Fatalf("extract: %d %q %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, nil, "extract", "--sep", ":", "A:B:"+u.String())
	if code != 0 || out != u.String()+"\n" {
		t.Fatalf("extract --sep: %d %q", code, out)
	}

	const secret = "do-not-print-me-0123456789"
	env := map[string]string{forge.EnvNamespace: "mycompany.com", forge.EnvSalt: secret}
	code, out, errOut = runCLI(t, env, "info")
	if code != 0 {
		t.Fatalf("info: %d %q", code, errOut)
	}
	g := forge.MustNew("mycompany.com", forge.WithSecret(secret))
	for _, want := range []string{g.Namespace().String(), "scheme: keyed", "secret: " + g.Fingerprint()} {
		if !strings.Contains(out, want) {
			t.Errorf("info output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out+errOut, secret) {
		t.Fatalf("info printed the secret: %q", out)
	}

	code, out, _ = runCLI(t, nil, "new-secret")
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(out))
	if code != 0 || err != nil || len(raw) < 32 {
		t.Fatalf("new-secret: %d %q (%d bytes, %v)", code, out, len(raw), err)
	}
	_, again, _ := runCLI(t, nil, "new-secret")
	if again == out {
		t.Fatal("new-secret repeats itself")
	}
}

// TestBinary builds the command and runs it as a user would.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "forge")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "id", "--json", `{"sku":"A","qty":2}`, "7")
	cmd.Env = append(os.Environ(), forge.EnvNamespace+"=orders", forge.EnvSalt+"=", forge.EnvScheme+"=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("forge id: %v", err)
	}
	want := forge.MustNew("orders").MustID(map[string]any{"qty": 2, "sku": "A"}, 7).String()
	if strings.TrimSpace(string(out)) != want {
		t.Fatalf("forge id = %q, want %s", out, want)
	}
	bad := exec.Command(bin, "id", "--namespace", "orders", "--json", "NaN")
	var stderr bytes.Buffer
	bad.Stderr = &stderr
	err = bad.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(stderr.String(), "malformed JSON") {
		t.Fatalf("forge id --json NaN: %v, stderr %q", err, stderr.String())
	}
}
