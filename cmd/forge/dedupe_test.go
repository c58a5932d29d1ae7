package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// cliStore is a store the CLI is pointed at, with the library's view of it.
type cliStore struct {
	name string
	// args select the store on the command line.
	args []string
	// with runs fn on the library's store. bbolt allows one opener per
	// file, so the bolt store is open only during fn, never while the CLI
	// runs.
	with func(t *testing.T, fn func(dedupe.Admin))
}

func redisCLIStore(t *testing.T) cliStore {
	t.Helper()
	raw := testenv.RedisURL(t)
	opt, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	prefix := testenv.Name(t, "cli") + ":"
	s, err := redisstore.New(client, redisstore.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
	})
	return cliStore{
		name: "redis",
		args: []string{"--redis", raw, "--prefix", prefix},
		with: func(_ *testing.T, fn func(dedupe.Admin)) { fn(s) },
	}
}

func postgresCLIStore(t *testing.T) cliStore {
	t.Helper()
	raw := testenv.PostgresURL(t)
	ctx := testenv.Context(t, 30*time.Second)
	pool, err := pgxpool.New(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	table := testenv.Name(t, "cli")
	s, err := pgstore.New(pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, raw)
		if err != nil {
			t.Errorf("drop %s: %v", s.Table(), err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+s.Table()); err != nil {
			t.Errorf("drop %s: %v", s.Table(), err)
		}
	})
	return cliStore{
		name: "postgres",
		args: []string{"--postgres", raw, "--table", table},
		with: func(_ *testing.T, fn func(dedupe.Admin)) { fn(s) },
	}
}

func boltCLIStore(t *testing.T) cliStore {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dedupe.db")
	const bucket = "billing"
	with := func(t *testing.T, fn func(dedupe.Admin)) {
		t.Helper()
		s, err := boltstore.Open(path, boltstore.WithBucket(bucket))
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}()
		fn(s)
	}
	with(t, func(dedupe.Admin) {}) // create the file and the bucket
	return cliStore{
		name: "bolt",
		args: []string{"--bolt", path, "--bucket", bucket},
		with: with,
	}
}

// dedupeJSON is what --json prints, read independently of the command's
// own type.
type dedupeJSON struct {
	Scope     string     `json:"scope"`
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Token     uint64     `json:"token"`
	Until     *time.Time `json:"until"`
	Forever   *bool      `json:"forever"`
	Expired   *bool      `json:"expired"`
	Forgotten *bool      `json:"forgotten"`
}

func readJSON(t *testing.T, out string) dedupeJSON {
	t.Helper()
	var j dedupeJSON
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if j.Forever == nil || j.Expired == nil {
		t.Fatalf("--json output %q lacks forever or expired", out)
	}
	return j
}

func newCLIKey() dedupe.Key { return dedupe.Key{Scope: "billing", ID: uuid.New()} }

// dedupeCLI runs forge dedupe op against st with more arguments, no
// environment, and returns what run returned.
func dedupeCLI(t *testing.T, st cliStore, op string, more ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, nil, append(append([]string{"dedupe", op}, st.args...), more...)...)
}

// TestDedupeStores runs forge dedupe get and forget against each store, in
// every state a key can be in, and checks the answers against the
// library's.
func TestDedupeStores(t *testing.T) {
	for _, mk := range []func(*testing.T) cliStore{redisCLIStore, postgresCLIStore, boltCLIStore} {
		st := mk(t)
		t.Run(st.name, func(t *testing.T) {
			t.Run("absent", func(t *testing.T) { testDedupeAbsent(t, st) })
			t.Run("leased", func(t *testing.T) { testDedupeLeased(t, st) })
			t.Run("done", func(t *testing.T) { testDedupeDone(t, st) })
		})
	}
}

func testDedupeAbsent(t *testing.T, st cliStore) {
	key := newCLIKey()
	code, out, errOut := dedupeCLI(t, st, "get", key.Scope, key.ID.String())
	if code != exitAbsent || errOut != "" || !strings.Contains(out, "absent") || !strings.Contains(out, key.String()) {
		t.Fatalf("get of an absent key: exit %d, stdout %q, stderr %q; want %d and absent", code, out, errOut, exitAbsent)
	}
	code, out, _ = dedupeCLI(t, st, "get", "--json", key.Scope, key.ID.String())
	if j := readJSON(t, out); code != exitAbsent || j.State != "absent" || j.Scope != key.Scope || j.ID != key.ID.String() || j.Token != 0 || j.Until != nil || j.Forgotten != nil {
		t.Fatalf("get --json of an absent key: exit %d, %q", code, out)
	}
	code, out, errOut = dedupeCLI(t, st, "forget", key.Scope, key.ID.String())
	if code != exitAbsent || errOut != "" || !strings.Contains(out, "nothing to forget") {
		t.Fatalf("forget of an absent key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = dedupeCLI(t, st, "forget", "--json", key.Scope, key.ID.String())
	if j := readJSON(t, out); code != exitAbsent || j.State != "absent" || j.Forgotten == nil || *j.Forgotten {
		t.Fatalf("forget --json of an absent key: exit %d, %q", code, out)
	}
}

func testDedupeLeased(t *testing.T, st cliStore) {
	key := newCLIKey()
	var holder dedupe.Claim
	st.with(t, func(s dedupe.Admin) {
		var err error
		if holder, err = s.Claim(context.Background(), key, time.Hour); err != nil || !holder.Acquired() {
			t.Fatalf("Claim = %+v, %v", holder, err)
		}
	})
	token := strconv.FormatUint(holder.Token, 10)
	code, out, errOut := dedupeCLI(t, st, "get", key.Scope, key.ID.String())
	if code != 0 || errOut != "" || !strings.Contains(out, "leased until "+holder.Until.UTC().Format(time.RFC3339)) || !strings.Contains(out, "token "+token) {
		t.Fatalf("get of a leased key: exit %d, stdout %q, stderr %q; want the lease end and token %s", code, out, errOut, token)
	}
	code, out, _ = dedupeCLI(t, st, "get", "--json", key.Scope, key.ID.String())
	j := readJSON(t, out)
	if code != 0 || j.State != "leased" || j.Token != holder.Token || j.Until == nil || !j.Until.Equal(holder.Until) || *j.Forever || *j.Expired {
		t.Fatalf("get --json of a leased key: exit %d, %q; want token %d until %v", code, out, holder.Token, holder.Until)
	}

	// Without --force: refused, explained, nothing changed.
	code, out, errOut = dedupeCLI(t, st, "forget", key.Scope, key.ID.String())
	if code != 1 || out != "" {
		t.Fatalf("forget of a live lease: exit %d, stdout %q; want 1 and nothing", code, out)
	}
	for _, want := range []string{key.String(), "token " + token, "--force", "lost lease", "processed twice"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("forget of a live lease: stderr %q lacks %q", errOut, want)
		}
	}
	st.with(t, func(s dedupe.Admin) {
		if r, err := s.Inspect(context.Background(), key); err != nil || r.State != dedupe.Leased || r.Token != holder.Token {
			t.Fatalf("after a refused forget: %v, %v; want the lease", r, err)
		}
	})

	// With --force: forgotten; the holder's completion fails.
	code, out, errOut = dedupeCLI(t, st, "forget", "--force", "--json", key.Scope, key.ID.String())
	j = readJSON(t, out)
	if code != 0 || errOut != "" || j.State != "leased" || j.Token != holder.Token || j.Forgotten == nil || !*j.Forgotten {
		t.Fatalf("forget --force of a live lease: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	st.with(t, func(s dedupe.Admin) {
		ctx := context.Background()
		if err := s.Complete(ctx, holder, 0); !errors.Is(err, dedupe.ErrLeaseLost) {
			t.Fatalf("Complete by the holder after forget --force: %v, want ErrLeaseLost", err)
		}
		next, err := s.Claim(ctx, key, time.Minute)
		if err != nil || !next.Acquired() || next.Token <= holder.Token {
			t.Fatalf("Claim after forget --force = %+v, %v; want acquired with a token above %d", next, err, holder.Token)
		}
		if err := s.Release(ctx, next); err != nil {
			t.Fatal(err)
		}
	})

	// The human form of a forced forget says what it means.
	other := newCLIKey()
	st.with(t, func(s dedupe.Admin) {
		if c, err := s.Claim(context.Background(), other, time.Hour); err != nil || !c.Acquired() {
			t.Fatalf("Claim = %+v, %v", c, err)
		}
	})
	code, out, _ = dedupeCLI(t, st, "forget", "--force", other.Scope, other.ID.String())
	if code != 0 || !strings.Contains(out, "forgot "+other.String()) || !strings.Contains(out, "lost lease") || !strings.Contains(out, "processed twice") {
		t.Fatalf("forget --force: exit %d, stdout %q", code, out)
	}
}

func testDedupeDone(t *testing.T, st cliStore) {
	kept, forever := newCLIKey(), newCLIKey()
	var keptClaim, foreverClaim dedupe.Claim
	st.with(t, func(s dedupe.Admin) {
		ctx := context.Background()
		var err error
		if keptClaim, err = s.Claim(ctx, kept, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, keptClaim, time.Hour); err != nil {
			t.Fatal(err)
		}
		if foreverClaim, err = s.Claim(ctx, forever, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, foreverClaim, dedupe.Forever); err != nil {
			t.Fatal(err)
		}
	})
	code, out, _ := dedupeCLI(t, st, "get", kept.Scope, kept.ID.String())
	if code != 0 || !strings.Contains(out, "completed, kept until ") || !strings.Contains(out, "duplicates") {
		t.Fatalf("get of a completed key: exit %d, stdout %q", code, out)
	}
	code, out, _ = dedupeCLI(t, st, "get", "--json", kept.Scope, kept.ID.String())
	j := readJSON(t, out)
	if code != 0 || j.State != "done" || j.Token != keptClaim.Token || j.Until == nil || *j.Forever ||
		j.Until.Before(time.Now().Add(59*time.Minute)) || j.Until.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("get --json of a completed key: exit %d, %q", code, out)
	}
	code, out, _ = dedupeCLI(t, st, "get", forever.Scope, forever.ID.String())
	if code != 0 || !strings.Contains(out, "completed, kept forever, token "+strconv.FormatUint(foreverClaim.Token, 10)) {
		t.Fatalf("get of a key kept forever: exit %d, stdout %q", code, out)
	}
	code, out, _ = dedupeCLI(t, st, "get", "--json", forever.Scope, forever.ID.String())
	if j := readJSON(t, out); code != 0 || j.State != "done" || j.Until != nil || !*j.Forever {
		t.Fatalf("get --json of a key kept forever: exit %d, %q", code, out)
	}

	// Forget needs no force for a completed key; the next claim acquires.
	for _, c := range []dedupe.Claim{keptClaim, foreverClaim} {
		code, out, errOut := dedupeCLI(t, st, "forget", c.Key.Scope, c.Key.ID.String())
		if code != 0 || errOut != "" || !strings.Contains(out, "forgot "+c.Key.String()) || !strings.Contains(out, "next delivery will be processed") {
			t.Fatalf("forget of a completed key: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if code, _, _ := dedupeCLI(t, st, "get", c.Key.Scope, c.Key.ID.String()); code != exitAbsent {
			t.Fatalf("get after forget: exit %d, want %d", code, exitAbsent)
		}
		st.with(t, func(s dedupe.Admin) {
			next, err := s.Claim(context.Background(), c.Key, time.Minute)
			if err != nil || !next.Acquired() || next.Token <= c.Token {
				t.Fatalf("Claim after forget = %+v, %v; want acquired with a token above %d", next, err, c.Token)
			}
			if err := s.Complete(context.Background(), next, time.Minute); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDedupeEnv: without a store flag, REDIS_URL or POSTGRES_URL names the
// store; a flag beats them.
func TestDedupeEnv(t *testing.T) {
	rurl, purl := testenv.RedisURL(t), testenv.PostgresURL(t)
	key := newCLIKey()
	args := []string{"dedupe", "get", key.Scope, key.ID.String()}
	if code, out, errOut := runCLI(t, map[string]string{envRedis: rurl}, args...); code != exitAbsent {
		t.Fatalf("REDIS_URL: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// The default table does not exist in the test database, and the
	// error says so: the command did use POSTGRES_URL.
	code, out, errOut := runCLI(t, map[string]string{envPostgres: purl}, append([]string{"dedupe", "get", "--table", testenv.Name(t, "missing")}, args[2:]...)...)
	if code != 1 || !strings.Contains(errOut, "is --table right") {
		t.Fatalf("POSTGRES_URL with a missing table: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A flag beats the variables, even when both are set.
	both := map[string]string{envRedis: "redis://127.0.0.1:1/0", envPostgres: purl}
	if code, out, errOut := runCLI(t, both, append([]string{"dedupe", "get", "--redis", rurl}, args[2:]...)...); code != exitAbsent {
		t.Fatalf("--redis with both variables set: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestDedupeUsage: usage errors exit with 2, bad values with 1, and neither
// prints anything on stdout.
func TestDedupeUsage(t *testing.T) {
	id := uuid.NewString()
	both := map[string]string{envRedis: "redis://127.0.0.1/0", envPostgres: "postgres://127.0.0.1/x"}
	r := []string{"--redis", "redis://127.0.0.1:1/0"}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		code    int
		message string
	}{
		{"no subcommand", nil, []string{"dedupe"}, 2, "get or forget"},
		{"unknown subcommand", nil, []string{"dedupe", "purge"}, 2, `"purge"`},
		{"no key", nil, append([]string{"dedupe", "get"}, r...), 2, "SCOPE and ID"},
		{"no ID", nil, append([]string{"dedupe", "get"}, append(r, "billing")...), 2, "SCOPE and ID"},
		{"flag after the key", nil, append([]string{"dedupe", "get"}, append(r, "billing", id, "--json")...), 2, "flags go before"},
		{"no store", nil, []string{"dedupe", "get", "billing", id}, 2, "no store"},
		{"both variables", both, []string{"dedupe", "get", "billing", id}, 2, "both REDIS_URL and POSTGRES_URL"},
		{"two stores", nil, []string{"dedupe", "get", "--redis", "redis://x", "--bolt", "f", "billing", id}, 2, "one store"},
		{"prefix without redis", nil, []string{"dedupe", "get", "--bolt", "f", "--prefix", "p", "billing", id}, 2, "--prefix is for the redis store"},
		{"table without postgres", nil, append([]string{"dedupe", "get", "--table", "t"}, append(r, "billing", id)...), 2, "--table is for the postgres store"},
		{"bucket without bolt", nil, append([]string{"dedupe", "get", "--bucket", "b"}, append(r, "billing", id)...), 2, "--bucket is for the bolt store"},
		{"force on get", nil, append([]string{"dedupe", "get", "--force"}, append(r, "billing", id)...), 2, "not defined"},
		{"empty redis URL", nil, []string{"dedupe", "get", "--redis", "", "billing", id}, 2, "empty URL"},
		{"empty bolt path", nil, []string{"dedupe", "get", "--bolt", "", "billing", id}, 2, "empty path"},
		{"bad ID", nil, append([]string{"dedupe", "get"}, append(r, "billing", "INV-1")...), 1, `ID "INV-1": not a UUID`},
		{"nil ID", nil, append([]string{"dedupe", "get"}, append(r, "billing", uuid.Nil.String())...), 1, "nil message ID"},
		{"scope with NUL", nil, append([]string{"dedupe", "get"}, append(r, "a\x00b", id)...), 1, "NUL"},
		{"zero timeout", nil, append([]string{"dedupe", "get", "--timeout", "0s"}, append(r, "billing", id)...), 1, "--timeout"},
		{"brace in prefix", nil, append([]string{"dedupe", "get", "--prefix", "a{b"}, append(r, "billing", id)...), 1, "--prefix"},
		{"bad table", nil, []string{"dedupe", "get", "--postgres", "postgres://127.0.0.1:1/x", "--table", "a;b", "billing", id}, 1, "--table"},
		{"wrong scheme", nil, []string{"dedupe", "get", "--redis", "http://127.0.0.1/", "billing", id}, 1, "want a redis://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.env, tc.args...)
			if code != tc.code || out != "" || !strings.Contains(errOut, tc.message) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, tc.code, tc.message)
			}
			if strings.Count(errOut, "forge:") != 1 {
				t.Errorf("stderr %q: want one \"forge:\" prefix", errOut)
			}
		})
	}
	code, out, _ := runCLI(t, nil, "dedupe", "help")
	if code != 0 || !strings.Contains(out, "Exit status") || !strings.Contains(out, "--force") {
		t.Fatalf("dedupe help: exit %d, stdout %q", code, out)
	}
}

// closedPort returns a 127.0.0.1 port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port
}

// TestDedupeRedaction: whatever fails — a URL that does not parse, one a
// driver refuses, a server that does not answer — no password reaches the
// output, and a URL that does not parse is not echoed at all.
func TestDedupeRedaction(t *testing.T) {
	const secret = "s3cretPW"
	port := closedPort(t)
	id := uuid.NewString()
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		want     string // in stderr
		mustNot  []string
		redacted bool // the redacted URL is shown
	}{
		{"redis unreachable", nil, []string{"--redis", "redis://user:" + secret + "@127.0.0.1:" + port + "/0"}, "refused", nil, true},
		{"redis bad database", nil, []string{"--redis", "redis://user:" + secret + "@127.0.0.1/x"}, "database", nil, true},
		{"redis not a URL", nil, []string{"--redis", "redis://user:%zz" + secret + "@127.0.0.1/0"}, "--redis: not a URL", []string{"127.0.0.1", "%zz"}, false},
		{"REDIS_URL not a URL", map[string]string{envRedis: "redis://user:%zz" + secret + "@127.0.0.1/0"}, nil, "REDIS_URL: not a URL", []string{"127.0.0.1"}, false},
		{"postgres unreachable", nil, []string{"--postgres", "postgres://postgres:" + secret + "@127.0.0.1:" + port + "/test?sslmode=disable"}, "refused", nil, true},
		{"postgres query password", nil, []string{"--postgres", "postgres://127.0.0.1:" + port + "/test?sslmode=disable&password=" + secret}, "refused", nil, true},
		{"postgres bad sslmode", nil, []string{"--postgres", "postgres://postgres:" + secret + "@127.0.0.1/test?sslmode=bogus&sslpassword=" + secret}, "sslmode", nil, true},
		{"postgres not a URL", nil, []string{"--postgres", "postgres://postgres:" + secret + "@127.0.0.1:port/test"}, "--postgres: not a URL", []string{"127.0.0.1"}, false},
		{"postgres keyword form", nil, []string{"--postgres", "host=127.0.0.1 password=" + secret}, "--postgres: not a URL", []string{"127.0.0.1"}, false},
		{"POSTGRES_URL unreachable", map[string]string{envPostgres: "postgresql://u:" + secret + "@127.0.0.1:" + port + "/test?sslmode=disable"}, nil, "refused", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"dedupe", "get", "--timeout", "5s"}, tc.args...), "billing", id)
			code, out, errOut := runCLI(t, tc.env, args...)
			if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, tc.want)
			}
			for _, bad := range append([]string{secret}, tc.mustNot...) {
				if strings.Contains(errOut, bad) {
					t.Fatalf("stderr %q shows %q", errOut, bad)
				}
			}
			if tc.redacted != strings.Contains(errOut, "xxxxx") {
				t.Fatalf("stderr %q: redacted URL shown = %v, want %v", errOut, !tc.redacted, tc.redacted)
			}
		})
	}
}

// TestDedupeBoltFile: the command neither creates a missing file or bucket
// nor waits for a file another process holds.
func TestDedupeBoltFile(t *testing.T) {
	dir := t.TempDir()
	id := uuid.NewString()
	missing := filepath.Join(dir, "missing.db")
	code, out, errOut := runCLI(t, nil, "dedupe", "get", "--bolt", missing, "billing", id)
	if code != 1 || out != "" || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the command created %s: %v", missing, err)
	}

	path := filepath.Join(dir, "dedupe.db")
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, _, errOut = runCLI(t, nil, "dedupe", "get", "--bolt", path, "billing", id)
	if code != 1 || !strings.Contains(errOut, "another process has the file open") {
		t.Fatalf("locked file: exit %d, stderr %q", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("locked file: the command took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	code, _, errOut = runCLI(t, nil, "dedupe", "forget", "--bolt", path, "--bucket", "nope", "billing", id)
	if code != 1 || !strings.Contains(errOut, `no bucket "nope"`) {
		t.Fatalf("missing bucket: exit %d, stderr %q", code, errOut)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("nope")) != nil {
			t.Fatal("the command created the bucket it was given")
		}
		return nil
	})
}
