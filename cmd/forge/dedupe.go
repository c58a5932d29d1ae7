package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
)

// exitAbsent is the exit status of forge dedupe for a key without a record.
const exitAbsent = 3

// errAbsent marks a key without a record: exit status exitAbsent, with the
// answer already printed on stdout and nothing on stderr.
var errAbsent = errors.New("absent")

// The environment variables forge dedupe reads when no store flag is given.
const (
	envRedis    = "REDIS_URL"
	envPostgres = "POSTGRES_URL"
)

// defaultDedupeTimeout bounds a forge dedupe command unless --timeout says
// otherwise.
const defaultDedupeTimeout = 10 * time.Second

const dedupeUsage = `usage:
  forge dedupe get    [STORE] [--json] [--timeout D] SCOPE ID
  forge dedupe forget [STORE] [--force] [--json] [--timeout D] SCOPE ID

STORE is one of
  --redis URL [--prefix P]      redis://, rediss:// or unix:// (redisstore)
  --postgres URL [--table T]    postgres:// or postgresql:// (pgstore)
  --bolt PATH [--bucket B]      a bbolt file no other process has open (boltstore)
Without one, REDIS_URL or POSTGRES_URL is used, whichever is set.

get shows the key's record: completed (kept until when, or forever), leased
(until when, by which fencing token), released, or absent. forget deletes it,
so that the next delivery of the message is processed again; it refuses a
lease that has not ended unless --force: the holder's completion then fails
with a lost lease, and the message may be processed twice.

Exit status: 0 the key has a record (get) or it was forgotten (forget);
3 the key has no record (nothing was forgotten); 1 an error, or a refused
forget; 2 a usage error. --json prints one JSON object on stdout.
`

// dedupeFlags are the flags of forge dedupe get and forget.
type dedupeFlags struct {
	redis, prefix   string
	postgres, table string
	bolt, bucket    string
	asJSON, force   bool
	timeout         time.Duration
	given           map[string]bool
}

func cmdDedupe(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errorf("%w: dedupe needs get or forget", errUsage)
	}
	op := args[0]
	switch op {
	case "get", "forget":
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, dedupeUsage)
		return nil
	default:
		return errorf("%w: unknown dedupe command %q (get or forget)", errUsage, op)
	}
	fs := newFlagSet("dedupe "+op, stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, dedupeUsage+"\nflags:\n")
		fs.PrintDefaults()
	}
	var f dedupeFlags
	fs.StringVar(&f.redis, "redis", "", "the Redis store's URL (default $"+envRedis+")")
	fs.StringVar(&f.prefix, "prefix", redisstore.DefaultPrefix, "the Redis store's key prefix (redisstore.WithPrefix)")
	fs.StringVar(&f.postgres, "postgres", "", "the PostgreSQL store's URL (default $"+envPostgres+")")
	fs.StringVar(&f.table, "table", pgstore.DefaultTable, "the PostgreSQL store's table, name or schema.name (pgstore.WithTable)")
	fs.StringVar(&f.bolt, "bolt", "", "the bbolt store's file")
	fs.StringVar(&f.bucket, "bucket", boltstore.DefaultBucket, "the bbolt store's bucket (boltstore.WithBucket)")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object")
	fs.DurationVar(&f.timeout, "timeout", defaultDedupeTimeout, "give up after this long")
	if op == "forget" {
		fs.BoolVar(&f.force, "force", false, "forget a lease that has not ended: its holder's completion fails, and the message may be processed twice")
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	f.given = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.given[fl.Name] = true })

	if fs.NArg() != 2 {
		for _, a := range fs.Args() {
			if strings.HasPrefix(a, "-") {
				return errorf("%w: dedupe %s: flags go before SCOPE and ID (found %q after them)", errUsage, op, a)
			}
		}
		return errorf("%w: dedupe %s takes SCOPE and ID", errUsage, op)
	}
	if f.timeout <= 0 {
		return errorf("--timeout %v: must be positive", f.timeout)
	}
	key, err := parseKey(fs.Arg(0), fs.Arg(1))
	if err != nil {
		return err
	}
	opener, err := f.store(getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	st, err := opener(ctx)
	if err != nil {
		return err
	}
	defer st.close()

	if op == "get" {
		r, err := st.admin.Inspect(ctx, key)
		if err != nil {
			return st.fail(err)
		}
		if err := printRecord(stdout, f.asJSON, key, r, nil); err != nil {
			return err
		}
		if r.State == dedupe.Absent {
			return errAbsent
		}
		return nil
	}
	r, err := st.admin.Forget(ctx, key, f.force)
	if errors.Is(err, dedupe.ErrLeaseHeld) {
		return errorf("%s: %s: not forgotten: a consumer holds its lease and may be processing the message. "+
			"--force forgets it anyway: the holder's completion then fails with a lost lease, and the message may be processed twice",
			key, describe(r, time.Now()))
	}
	if err != nil {
		return st.fail(err)
	}
	forgotten := r.State != dedupe.Absent
	if err := printRecord(stdout, f.asJSON, key, r, &forgotten); err != nil {
		return err
	}
	if !forgotten {
		return errAbsent
	}
	return nil
}

// parseKey reads SCOPE and ID.
func parseKey(scope, id string) (dedupe.Key, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return dedupe.Key{}, errorf("ID %q: not a UUID (forge extract reads the UUID out of a prefixed ID)", id)
	}
	key := dedupe.Key{Scope: scope, ID: u}
	if err := key.Validate(); err != nil {
		return dedupe.Key{}, errorf("SCOPE %q, ID %s: %w", scope, u, err)
	}
	return key, nil
}

// openedStore is a store forge dedupe talks to.
type openedStore struct {
	admin dedupe.Admin
	// where names the store in errors: a redacted URL or a path.
	where string
	// hint explains a store error, or returns "".
	hint  func(error) string
	close func()
}

// fail wraps a store error with where the store is.
func (s *openedStore) fail(err error) error {
	if h := s.hint(err); h != "" {
		return errorf("%s: %w (%s)", s.where, err, h)
	}
	return errorf("%s: %w", s.where, err)
}

// store checks the store flags and returns the function that opens the
// store they name.
func (f *dedupeFlags) store(getenv func(string) string) (func(context.Context) (*openedStore, error), error) {
	var kinds []string
	for _, k := range []string{"redis", "postgres", "bolt"} {
		if f.given[k] {
			kinds = append(kinds, k)
		}
	}
	src := ""
	switch len(kinds) {
	case 0:
		r, p := getenv(envRedis), getenv(envPostgres)
		switch {
		case r != "" && p != "":
			return nil, errorf("%w: both %s and %s are set: choose the store with --redis or --postgres", errUsage, envRedis, envPostgres)
		case r != "":
			kinds, f.redis, src = []string{"redis"}, r, envRedis
		case p != "":
			kinds, f.postgres, src = []string{"postgres"}, p, envPostgres
		default:
			return nil, errorf("%w: no store: give --redis, --postgres or --bolt (or set %s or %s)", errUsage, envRedis, envPostgres)
		}
	case 1:
		src = "--" + kinds[0]
	default:
		return nil, errorf("%w: give one store, not --%s", errUsage, strings.Join(kinds, " and --"))
	}
	kind := kinds[0]
	for flagName, owner := range map[string]string{"prefix": "redis", "table": "postgres", "bucket": "bolt"} {
		if f.given[flagName] && owner != kind {
			return nil, errorf("%w: --%s is for the %s store (--%s), not %s", errUsage, flagName, owner, owner, src)
		}
	}
	switch kind {
	case "redis":
		return f.openRedis(src)
	case "postgres":
		return f.openPostgres(src)
	}
	return f.openBolt()
}

func (f *dedupeFlags) openRedis(src string) (func(context.Context) (*openedStore, error), error) {
	u, secrets, err := parseURL(src, f.redis, "redis", "rediss", "unix")
	if err != nil {
		return nil, err
	}
	where := redactURL(u)
	opt, err := redis.ParseURL(f.redis)
	if err != nil {
		return nil, errorf("%s %s: %s", src, where, scrub(err.Error(), secrets))
	}
	// The command's deadline also interrupts a call waiting on the server.
	opt.ContextTimeoutEnabled = true
	// go-redis logs failed dials on stderr by itself; the error says it once.
	redis.SetLogger(&logging.VoidLogger{})
	var opts []redisstore.Option
	if f.given["prefix"] {
		opts = append(opts, redisstore.WithPrefix(f.prefix))
	}
	return func(context.Context) (*openedStore, error) {
		client := redis.NewClient(opt) // connects on first use
		s, err := redisstore.New(client, opts...)
		if err != nil {
			client.Close()
			return nil, errorf("--prefix: %w", err)
		}
		return &openedStore{
			admin: s,
			where: where,
			hint:  func(error) string { return "" },
			close: func() { s.Close(); client.Close() },
		}, nil
	}, nil
}

func (f *dedupeFlags) openPostgres(src string) (func(context.Context) (*openedStore, error), error) {
	u, secrets, err := parseURL(src, f.postgres, "postgres", "postgresql")
	if err != nil {
		return nil, err
	}
	where := redactURL(u)
	cfg, err := pgxpool.ParseConfig(f.postgres)
	if err != nil {
		msg := err.Error()
		// pgx quotes the (redacted) URL first; it is already named.
		if strings.HasPrefix(msg, "cannot parse `") {
			if i := strings.Index(msg, "`: "); i >= 0 {
				msg = msg[i+3:]
			}
		}
		return nil, errorf("%s %s: %s", src, where, scrub(msg, secrets))
	}
	cfg.MaxConns = 2
	var opts []pgstore.Option
	if f.given["table"] {
		opts = append(opts, pgstore.WithTable(f.table))
	}
	return func(ctx context.Context) (*openedStore, error) {
		pool, err := pgxpool.NewWithConfig(ctx, cfg) // connects on first use
		if err != nil {
			return nil, errorf("%s: %s", where, scrub(err.Error(), secrets))
		}
		s, err := pgstore.New(pool, opts...)
		if err != nil {
			pool.Close()
			return nil, errorf("--table: %w", err)
		}
		hint := func(err error) string {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
				return "no table " + s.Table() + ": is --table right, and was the store migrated?"
			}
			return ""
		}
		return &openedStore{
			admin: s,
			where: where,
			hint:  hint,
			close: func() { s.Close(); pool.Close() },
		}, nil
	}, nil
}

func (f *dedupeFlags) openBolt() (func(context.Context) (*openedStore, error), error) {
	if f.bolt == "" {
		return nil, errorf("%w: --bolt: empty path", errUsage)
	}
	if f.bucket == "" {
		return nil, errorf("--bucket: empty bucket name")
	}
	path := f.bolt
	return func(context.Context) (*openedStore, error) {
		// Opening would create a missing file; a wrong path is an error.
		if _, err := os.Stat(path); err != nil {
			return nil, errorf("--bolt: %w", err)
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: boltstore.DefaultOpenTimeout})
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, errorf("--bolt %s: another process has the file open (bbolt allows one): stop the consumer that uses it first", path)
		}
		if err != nil {
			return nil, errorf("--bolt %s: %w", path, err)
		}
		// The store would create a missing bucket; a wrong name is an error.
		var found bool
		_ = db.View(func(tx *bolt.Tx) error {
			found = tx.Bucket([]byte(f.bucket)) != nil
			return nil
		})
		if !found {
			db.Close()
			return nil, errorf("--bolt %s: no bucket %q (is --bucket right?)", path, f.bucket)
		}
		s, err := boltstore.New(db, boltstore.WithBucket(f.bucket))
		if err != nil {
			db.Close()
			return nil, errorf("--bolt %s: %w", path, err)
		}
		return &openedStore{
			admin: s,
			where: path,
			hint:  func(error) string { return "" },
			close: func() { s.Close(); db.Close() },
		}, nil
	}, nil
}

// parseURL parses raw, from src (a flag or a variable), as a URL of one of
// schemes. A value that does not parse is not echoed: it may hold a
// password. secrets are the passwords it holds (user info and query
// parameters named like password), to scrub from drivers' messages.
func parseURL(src, raw string, schemes ...string) (*url.URL, []string, error) {
	if raw == "" {
		return nil, nil, errorf("%w: %s: empty URL", errUsage, src)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return nil, nil, errorf("%s: not a URL (the value is not shown: it may hold a password; "+
			"percent-encode '%%', '#', '/', '?', '@' and ':' in the user name and password)", src)
	}
	ok := false
	for _, s := range schemes {
		ok = ok || strings.EqualFold(u.Scheme, s)
	}
	if !ok {
		return nil, nil, errorf("%s %s: want a %s:// URL", src, redactURL(u), strings.Join(schemes, ":// or "))
	}
	var secrets []string
	add := func(s string) {
		if s != "" {
			secrets = append(secrets, s, url.QueryEscape(s), url.PathEscape(s))
		}
	}
	if p, ok := u.User.Password(); ok {
		add(p)
	}
	for k, vs := range u.Query() {
		if strings.Contains(strings.ToLower(k), "password") {
			for _, v := range vs {
				add(v)
			}
		}
	}
	return u, secrets, nil
}

// redactURL returns u as (*url.URL).Redacted does (the user info's password
// as xxxxx), with the values of query parameters named like password (pgx
// reads password and sslpassword there) masked the same way.
func redactURL(u *url.URL) string {
	c := *u
	q := c.Query()
	masked := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q[k] = []string{"xxxxx"}
			masked = true
		}
	}
	if masked {
		c.RawQuery = q.Encode()
	}
	return c.Redacted()
}

// scrub replaces every secret in msg with xxxxx, longest first.
func scrub(msg string, secrets []string) string {
	for {
		longest := ""
		for _, s := range secrets {
			if len(s) > len(longest) && strings.Contains(msg, s) {
				longest = s
			}
		}
		if longest == "" {
			return msg
		}
		msg = strings.ReplaceAll(msg, longest, "xxxxx")
	}
}

// recordJSON is the --json output.
type recordJSON struct {
	Scope   string     `json:"scope"`
	ID      string     `json:"id"`
	State   string     `json:"state"`
	Token   uint64     `json:"token,omitempty"`
	Until   *time.Time `json:"until,omitempty"`
	Forever bool       `json:"forever"`
	Expired bool       `json:"expired"`
	// Forgotten is set by forget only.
	Forgotten *bool `json:"forgotten,omitempty"`
}

// printRecord prints r, the record of key; forgotten is nil for get.
func printRecord(w io.Writer, asJSON bool, key dedupe.Key, r dedupe.Record, forgotten *bool) error {
	if asJSON {
		out := recordJSON{Scope: key.Scope, ID: key.ID.String(), State: r.State.String(), Token: r.Token,
			Forever: r.Forever(), Expired: r.Expired, Forgotten: forgotten}
		if !r.Until.IsZero() {
			u := r.Until.UTC()
			out.Until = &u
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	now := time.Now()
	switch {
	case forgotten == nil && r.State == dedupe.Absent:
		_, err := fmt.Fprintf(w, "%s: absent: the next delivery will be processed\n", key)
		return err
	case forgotten == nil:
		_, err := fmt.Fprintf(w, "%s: %s%s\n", key, describe(r, now), consequence(r))
		return err
	case !*forgotten:
		_, err := fmt.Fprintf(w, "%s: absent: nothing to forget\n", key)
		return err
	}
	next := "the next delivery will be processed"
	if r.Live() {
		next = "its holder's completion will fail with a lost lease, and the message may be processed twice"
	}
	_, err := fmt.Fprintf(w, "forgot %s (was %s): %s\n", key, describe(r, now), next)
	return err
}

// describe says what r is, with its times relative to now.
func describe(r dedupe.Record, now time.Time) string {
	switch r.State {
	case dedupe.Leased:
		if r.Expired {
			return fmt.Sprintf("leased until %s, expired, token %d", when(r.Until, now), r.Token)
		}
		return fmt.Sprintf("leased until %s, token %d", when(r.Until, now), r.Token)
	case dedupe.Done:
		switch {
		case r.Forever():
			return fmt.Sprintf("completed, kept forever, token %d", r.Token)
		case r.Expired:
			return fmt.Sprintf("completed, retention ended %s, token %d", when(r.Until, now), r.Token)
		}
		return fmt.Sprintf("completed, kept until %s, token %d", when(r.Until, now), r.Token)
	case dedupe.Released:
		if r.Token != 0 {
			return fmt.Sprintf("released, token %d", r.Token)
		}
		return "released"
	}
	return r.State.String()
}

// consequence says what the next delivery of a message in state r meets.
func consequence(r dedupe.Record) string {
	switch {
	case r.Live():
		return ": a consumer holds the lease and may be processing the message"
	case r.State == dedupe.Done && !r.Expired:
		return ": deliveries are acknowledged as duplicates"
	}
	return ": the next delivery will be processed"
}

// when formats t in UTC with its distance from now.
func when(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return fmt.Sprintf("%s (%s)", t.UTC().Format(time.RFC3339), rel)
}
