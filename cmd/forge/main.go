package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"strconv"
	"strings"

	"github.com/uuidforge/uuidforge/forge"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

const usage = `usage:
  forge id [--namespace NS] [--secret-env VAR] [--scheme v5|keyed|python] [--prefix P] [--sep S] [--json] PART...
  forge new-secret
  forge extract [--sep S] ID
  forge info [--namespace NS] [--secret-env VAR] [--scheme v5|keyed|python]

Configuration defaults come from UUID_FORGE_NAMESPACE, UUID_FORGE_SALT and
UUID_FORGE_SCHEME. The secret is never printed; info shows its fingerprint.
`

var (
	// errUsage marks errors that come with the usage text and exit status 2.
	errUsage = errors.New("usage")
	// errFlags marks flag errors, already reported by the flag package.
	errFlags = errors.New("bad flags")
)

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errFlags
	}
	return nil
}

// run executes one command and returns the process exit status.
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "id":
		err = cmdID(args[1:], stdout, stderr, getenv)
	case "new-secret":
		err = cmdNewSecret(args[1:], stdout, stderr)
	case "extract":
		err = cmdExtract(args[1:], stdout, stderr)
	case "info":
		err = cmdInfo(args[1:], stdout, stderr, getenv)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlags):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "forge: %v\n%s", err, usage)
		return 2
	default:
		msg := err.Error()
		if !strings.HasPrefix(msg, "forge: ") {
			msg = "forge: " + msg
		}
		fmt.Fprintln(stderr, msg)
		return 1
	}
}

// genFlags are the flags shared by id and info.
type genFlags struct {
	namespace string
	secretEnv string
	scheme    string
}

func (f *genFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.namespace, "namespace", "", "namespace: a UUID, or any other string mapped to UUIDv5(DNS, s) (default $"+forge.EnvNamespace+")")
	fs.StringVar(&f.secretEnv, "secret-env", "", "name of the environment variable holding the secret (default "+forge.EnvSalt+")")
	fs.StringVar(&f.scheme, "scheme", "", "scheme: v5, keyed or python (default $"+forge.EnvScheme+", else keyed with a secret, v5 without)")
}

func (f *genFlags) config(getenv func(string) string) (forge.Config, error) {
	env := func(k string) string {
		switch k {
		case forge.EnvNamespace:
			if f.namespace != "" {
				return f.namespace
			}
		case forge.EnvSalt:
			if f.secretEnv != "" {
				return getenv(f.secretEnv)
			}
		case forge.EnvScheme:
			if f.scheme != "" {
				return f.scheme
			}
		}
		return getenv(k)
	}
	if f.secretEnv != "" && getenv(f.secretEnv) == "" {
		return forge.Config{}, fmt.Errorf("secret variable %s is unset or empty", f.secretEnv)
	}
	return forge.ConfigFromEnv(env)
}

func (f *genFlags) generator(getenv func(string) string) (*forge.Generator, forge.Config, error) {
	c, err := f.config(getenv)
	if err != nil {
		return nil, c, err
	}
	g, err := c.Generator()
	if err != nil && errors.Is(err, forge.ErrEmptyNamespace) {
		err = fmt.Errorf("%w: pass --namespace or set %s", forge.ErrEmptyNamespace, forge.EnvNamespace)
	}
	return g, c, err
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("forge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func cmdID(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("id", stderr)
	var gf genFlags
	gf.register(fs)
	prefix := fs.String("prefix", "", "print PREFIX<sep>UUID instead of the bare UUID")
	sep := fs.String("sep", forge.DefaultSeparator, "separator between the prefix and the UUID")
	asJSON := fs.Bool("json", false, "parse each PART as one JSON value (default: each PART is a string)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: id needs at least one PART", errUsage)
	}
	g, _, err := gf.generator(getenv)
	if err != nil {
		return err
	}
	parts := make([]any, fs.NArg())
	for i, a := range fs.Args() {
		switch {
		case !*asJSON:
			parts[i] = a
		case g.Scheme() == forge.SchemePython:
			v, err := pythonValue(a)
			if err != nil {
				return fmt.Errorf("part %d %q: %w", i+1, a, err)
			}
			parts[i] = v
		default:
			if !json.Valid([]byte(a)) {
				return fmt.Errorf("part %d %q: malformed JSON", i+1, a)
			}
			parts[i] = json.RawMessage(a)
		}
	}
	id, err := g.ID(parts...)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, forge.Prefix(*prefix, *sep, id))
	return nil
}

// pythonValue reads a JSON scalar as a Python argument: strings, integers
// of any size, floats, booleans and null.
func pythonValue(s string) (any, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("malformed JSON: trailing data")
	}
	switch x := v.(type) {
	case json.Number:
		if !strings.ContainsAny(string(x), ".eE") {
			b, ok := new(big.Int).SetString(string(x), 10)
			if !ok {
				return nil, fmt.Errorf("bad integer %s", x)
			}
			return b, nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return nil, err
		}
		return f, nil
	case string, bool, nil:
		return x, nil
	}
	return nil, errors.New("the python scheme takes strings, numbers, booleans and null only")
}

func cmdNewSecret(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("new-secret", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: new-secret takes no arguments", errUsage)
	}
	s, err := forge.NewSecret()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, s)
	return nil
}

func cmdExtract(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("extract", stderr)
	sep := fs.String("sep", forge.DefaultSeparator, "separator between the prefix and the UUID")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: extract takes exactly one ID", errUsage)
	}
	u, err := forge.Extract(fs.Arg(0), *sep)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, u)
	return nil
}

func cmdInfo(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("info", stderr)
	var gf genFlags
	gf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: info takes no arguments", errUsage)
	}
	g, c, err := gf.generator(getenv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "namespace: %s (from %q)\nscheme: %s\nsecret: %s\n", g.Namespace(), c.Namespace, g.Scheme(), g.Fingerprint())
	return nil
}
