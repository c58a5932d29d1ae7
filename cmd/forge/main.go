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
	"unicode/utf8"

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
  forge dedupe get|forget [STORE] [--force] [--json] [--timeout D] SCOPE ID
      STORE: --redis URL [--prefix P] | --postgres URL [--table T] | --bolt PATH [--bucket B]
  forge dlq list|show|redrive SOURCE [FILTER] [--json] [--timeout D] ...
      SOURCE: --queue NAME [--amqp URL] | --topic NAME [--kafka BROKERS]

Configuration defaults come from UUID_FORGE_NAMESPACE, UUID_FORGE_SALT and
UUID_FORGE_SCHEME. The secret is never printed; info shows its fingerprint.
forge dedupe uses REDIS_URL or POSTGRES_URL when no STORE is given and exits
with status 3 when the key has no record ("forge dedupe -h" says more).
forge dlq lists, shows and redrives dead letters, from AMQP_URL or
KAFKA_BROKERS when --amqp or --kafka is not given, over TLS and SASL with
--kafka-tls, --kafka-sasl, ... and KAFKA_PASSWORD ("forge dlq -h" says more).
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
	case "dedupe":
		err = cmdDedupe(args[1:], stdout, stderr, getenv)
	case "dlq":
		err = cmdDLQ(args[1:], stdout, stderr, getenv)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = errorf("%w: unknown command %q", errUsage, args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlags):
		return 2
	case errors.Is(err, errAbsent):
		return exitAbsent
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "forge: %v\n%s", err, usage)
		return 2
	default:
		fmt.Fprintln(stderr, "forge: "+strings.TrimPrefix(err.Error(), "forge: "))
		return 1
	}
}

// errorf is fmt.Errorf with the "forge: " prefix of wrapped errors left
// out, so that run prints the prefix once.
func errorf(format string, args ...any) error {
	for i, a := range args {
		if e, ok := a.(error); ok {
			args[i] = unprefixed{e}
		}
	}
	return fmt.Errorf(format, args...)
}

// unprefixed shows an error without the forge package's prefix.
type unprefixed struct{ err error }

func (e unprefixed) Error() string { return strings.TrimPrefix(e.err.Error(), "forge: ") }
func (e unprefixed) Unwrap() error { return e.err }

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

// generator builds the generator that the flags and the environment
// describe. Errors name where the bad value came from: the flag, or the
// variable. A python salt shorter than forge.MinSecretBytes is used, with
// a warning on stderr; the keyed scheme refuses such a secret.
func (f *genFlags) generator(getenv func(string) string, stderr io.Writer) (*forge.Generator, forge.Config, error) {
	secretFrom := forge.EnvSalt
	if f.secretEnv != "" {
		if getenv(f.secretEnv) == "" {
			return nil, forge.Config{}, errorf("secret variable %s (--secret-env) is unset or empty", f.secretEnv)
		}
		secretFrom = f.secretEnv + " (--secret-env)"
	}
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
				return "" // the flag wins, parsed below
			}
		}
		return getenv(k)
	}
	c, err := forge.ConfigFromEnv(env) // its errors name the variable
	if err != nil {
		return nil, c, err
	}
	if f.scheme != "" {
		if c.Scheme, err = forge.ParseScheme(f.scheme); err != nil {
			return nil, c, errorf("--scheme %q: %w", f.scheme, forge.ErrUnknownScheme)
		}
	}
	if err := c.Secret.Check(); errors.Is(err, forge.ErrWeakSecret) {
		switch c.Scheme {
		case forge.SchemeKeyed:
			return nil, c, errorf("%s: %w", secretFrom, err)
		case forge.SchemePython:
			fmt.Fprintf(stderr, "forge: warning: %s: a salt shorter than %d bytes can be recovered from a single ID; "+
				"a new one from forge new-secret gives new IDs\n", secretFrom, forge.MinSecretBytes)
		}
	}
	g, err := c.Generator()
	if errors.Is(err, forge.ErrEmptyNamespace) {
		err = errorf("%w: pass --namespace or set %s", forge.ErrEmptyNamespace, forge.EnvNamespace)
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
		return errorf("%w: id needs at least one PART", errUsage)
	}
	switch {
	case !utf8.ValidString(*prefix):
		return errorf("--prefix %q: %w", *prefix, forge.ErrInvalidUTF8)
	case !utf8.ValidString(*sep):
		return errorf("--sep %q: %w", *sep, forge.ErrInvalidUTF8)
	case *sep == "":
		return errorf("--sep: %w", forge.ErrEmptySeparator)
	}
	if err := forge.CheckPrefix(*prefix, *sep); errors.Is(err, forge.ErrAmbiguousPrefix) {
		// forge extract could not read the ID back.
		return errorf("--prefix %q, --sep %q: %w", *prefix, *sep, forge.ErrAmbiguousPrefix)
	} else if err != nil {
		return err
	}
	g, _, err := gf.generator(getenv, stderr)
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
				return errorf("part %d %q: %w", i+1, a, err)
			}
			parts[i] = v
		default:
			if !json.Valid([]byte(a)) {
				return errorf("part %d %q: malformed JSON", i+1, a)
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
		return nil, errorf("malformed JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("malformed JSON: trailing data")
	}
	switch x := v.(type) {
	case json.Number:
		if !strings.ContainsAny(string(x), ".eE") {
			b, ok := new(big.Int).SetString(string(x), 10)
			if !ok {
				return nil, errorf("bad integer %s", x)
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
		return errorf("%w: new-secret takes no arguments", errUsage)
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
		return errorf("%w: extract takes exactly one ID", errUsage)
	}
	if *sep == "" {
		return errorf("--sep: %w", forge.ErrEmptySeparator)
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
		return errorf("%w: info takes no arguments", errUsage)
	}
	g, c, err := gf.generator(getenv, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "namespace: %s (from %q)\nscheme: %s\nsecret: %s\n", g.Namespace(), c.Namespace, g.Scheme(), g.Fingerprint())
	return nil
}
