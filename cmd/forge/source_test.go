package main

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uuidforge/uuidforge/forge"
)

// TestErrorsNameTheirSource checks that a bad value is reported under the
// flag or variable it came from.
func TestErrorsNameTheirSource(t *testing.T) {
	ns := map[string]string{forge.EnvNamespace: "x"}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		want     string
		mustNot  string
		exitCode int
	}{
		{"scheme flag", ns, []string{"id", "--scheme", "bogus", "a"}, `--scheme "bogus"`, forge.EnvScheme, 1},
		{"scheme flag beats a bad variable", map[string]string{forge.EnvNamespace: "x", forge.EnvScheme: "bogus"}, []string{"id", "--scheme", "v5", "a"}, "", "", 0},
		{"scheme variable", map[string]string{forge.EnvNamespace: "x", forge.EnvScheme: "bogus"}, []string{"id", "a"}, forge.EnvScheme, "--scheme", 1},
		{"info scheme flag", ns, []string{"info", "--scheme", "v4"}, `--scheme "v4"`, forge.EnvScheme, 1},
		{"weak secret variable", map[string]string{forge.EnvNamespace: "x", forge.EnvSalt: "abcd"}, []string{"id", "a"}, forge.EnvSalt, "abcd", 1},
		{"weak secret-env variable", map[string]string{forge.EnvNamespace: "x", "MY_KEY": "abcd"}, []string{"id", "--secret-env", "MY_KEY", "a"}, "MY_KEY", "abcd", 1},
		{"prefix not UTF-8", ns, []string{"id", "--prefix", "P\xff", "a"}, "--prefix", "", 1},
		{"sep not UTF-8", ns, []string{"id", "--prefix", "P", "--sep", "\xff", "a"}, "--sep", "", 1},
		{"empty sep", ns, []string{"id", "--prefix", "P", "--sep", "", "a"}, "--sep", "", 1},
		{"empty sep without prefix", ns, []string{"id", "--sep", "", "a"}, "--sep", "", 1},
		{"sep overlapping the prefix", ns, []string{"id", "--prefix", "a", "--sep", "aa", "a"}, "--sep", "", 1},
		{"extract empty sep", nil, []string{"extract", "--sep", "", "P-" + uuid.Nil.String()}, "--sep", "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, tc.args...)
			if code != tc.exitCode {
				t.Fatalf("exit %d, want %d (stdout %q, stderr %q)", code, tc.exitCode, out, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q does not name %s", errOut, tc.want)
			}
			if tc.mustNot != "" && strings.Contains(errOut, tc.mustNot) {
				t.Errorf("stderr %q blames %s", errOut, tc.mustNot)
			}
			if tc.exitCode != 0 && strings.Count(errOut, "forge:") != 1 {
				t.Errorf("stderr %q: want one \"forge:\" prefix", errOut)
			}
		})
	}
}

// TestShortSecret checks the CLI's side of SPEC §3/§5: a keyed secret
// shorter than 16 bytes is refused, a python salt that short is used with
// a warning on stderr, in id and in info.
func TestShortSecret(t *testing.T) {
	keyed := map[string]string{forge.EnvNamespace: "x", forge.EnvSalt: "s3cr3t"}
	for _, cmd := range [][]string{{"id", "a"}, {"info"}} {
		code, out, errOut := runCLI(t, keyed, cmd...)
		if code != 1 || out != "" || !strings.Contains(errOut, "16 bytes") || !strings.Contains(errOut, "new-secret") {
			t.Errorf("%s with a weak keyed secret: exit %d, stdout %q, stderr %q", cmd[0], code, out, errOut)
		}
	}
	py := map[string]string{forge.EnvNamespace: "mycompany.com", forge.EnvSalt: "s3cr3t", forge.EnvScheme: "python"}
	want := forge.MustNew(uuid.NewSHA1(uuid.NameSpaceDNS, []byte("mycompany.com")).String(),
		forge.WithScheme(forge.SchemePython), forge.WithSecret("s3cr3t")).MustID("user", "john@example.com")
	code, out, errOut := runCLI(t, py, "id", "user", "john@example.com")
	if code != 0 || out != want.String()+"\n" {
		t.Fatalf("python id: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "warning") || !strings.Contains(errOut, forge.EnvSalt) || strings.Contains(errOut, "s3cr3t") {
		t.Errorf("python id with a short salt: stderr %q, want a warning naming %s", errOut, forge.EnvSalt)
	}
	code, out, errOut = runCLI(t, py, "info")
	if code != 0 || !strings.Contains(out, "scheme: python") || !strings.Contains(errOut, "warning") {
		t.Errorf("python info: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	py[forge.EnvSalt] = "example-secret-do-not-use"
	if code, _, errOut := runCLI(t, py, "id", "user", "x"); code != 0 || errOut != "" {
		t.Errorf("python id with a long salt: exit %d, stderr %q", code, errOut)
	}
}

// roundTrip runs forge id with prefix and sep and, when it succeeds,
// forge extract with the same separator, which must give back the UUID.
func roundTrip(t *testing.T, prefix, sep string, parts ...string) {
	t.Helper()
	env := map[string]string{forge.EnvNamespace: "round-trip"}
	args := append([]string{"id", "--prefix", prefix, "--sep", sep, "--"}, parts...)
	code, out, errOut := runCLI(t, env, args...)
	if code != 0 {
		if out != "" || errOut == "" {
			t.Fatalf("id %q %q failed with stdout %q, stderr %q", prefix, sep, out, errOut)
		}
		return
	}
	_, bare, _ := runCLI(t, env, append([]string{"id", "--"}, parts...)...)
	code, got, errOut := runCLI(t, nil, "extract", "--sep", sep, "--", strings.TrimSuffix(out, "\n"))
	if code != 0 || got != bare {
		t.Fatalf("id --prefix %q --sep %q printed %q; extract: exit %d, %q, %q; want %q", prefix, sep, out, code, got, errOut, bare)
	}
}

// TestIDExtractRoundTrip checks that whatever forge id prints, forge
// extract with the same separator returns its UUID.
func TestIDExtractRoundTrip(t *testing.T) {
	for _, tc := range []struct{ prefix, sep string }{
		{"INV", "-"}, {"INV-EUR", "-"}, {"", "-"}, {"", "_"}, {"USR", "_"}, {"A:B", ":"}, {"x", "::"},
		{"a", "aa"}, {"aa", "a"}, {"ab", "ba"}, {"-", "-"}, {"--", "-"}, {"{", "}"}, {"urn:", ":"},
		{"uui", "d:"}, {"e26b5311", "-"}, {"P", "e"}, {"P", "-5"}, {"x-", "-"}, {"ö", "€"}, {"P", ""},
		{"P\xff", "-"}, {"P", "\xff"}, {"", ""},
	} {
		roundTrip(t, tc.prefix, tc.sep, "part")
	}
}

// FuzzIDExtractRoundTrip is TestIDExtractRoundTrip over arbitrary prefixes,
// separators and parts.
func FuzzIDExtractRoundTrip(f *testing.F) {
	for _, s := range [][3]string{{"INV", "-", "EUR"}, {"a", "aa", "x"}, {"", "", ""}, {"{", "}", "ö"}, {"P\xff", "-", "a"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, prefix, sep, part string) {
		roundTrip(t, prefix, sep, part)
	})
}
