package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// repoRoot returns the repository's root directory (where scripts/ lives).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test's source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// copyScripts copies scripts/*.sh into a fresh directory and returns the copy
// of services.sh. The script works from its parent directory, so anything an
// injected command writes with a relative path lands in that directory.
func copyScripts(t *testing.T) (dir, script string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := filepath.Glob(filepath.Join(repoRoot(t), "scripts", "*.sh"))
	if err != nil || len(src) == 0 {
		t.Fatalf("no scripts found: %v", err)
	}
	for _, s := range src {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "scripts", filepath.Base(s)), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, filepath.Join(dir, "scripts", "services.sh")
}

// runScript runs a copy of a script with env added to the environment.
func runScript(t *testing.T, script string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bash, lerr := exec.LookPath("bash")
	if lerr != nil {
		Unavailable(t, "tool bash", lerr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, append([]string{script}, args...)...)
	cmd.Dir = filepath.Dir(filepath.Dir(script))
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// psqlAdmin runs sql (which may use psql variables) against the "postgres"
// database of the test server, with vars as -v name=value.
func psqlAdmin(t *testing.T, sql string, vars ...string) string {
	t.Helper()
	psql := Tool(t, "psql")
	args := []string{"-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", adminURL(t)}
	for _, v := range vars {
		args = append(args, "-v", v)
	}
	cmd := exec.Command(psql, args...)
	cmd.Stdin = strings.NewReader(sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// adminURL is the test server's URL with database "postgres".
func adminURL(t *testing.T) string {
	t.Helper()
	u := PostgresURL(t)
	i := strings.Index(u, "://")
	j := strings.IndexAny(u[i+3:], "/?")
	if j < 0 {
		return u + "/postgres"
	}
	rest := u[i+3+j:]
	query := ""
	if k := strings.Index(rest, "?"); k >= 0 {
		query = rest[k:]
	}
	return u[:i+3+j] + "/postgres" + query
}

// TestServicesScriptRejectsHostileURLs runs scripts/services.sh (as root on
// CI) with URL variables that carry shell code or SQL. The script must refuse
// each one before doing anything, with a non-zero exit and a message naming
// the variable, and must run none of the injected code.
func TestServicesScriptRejectsHostileURLs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs scripts/services.sh: -short")
	}
	marker := fmt.Sprintf("injected_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	pgHost := strings.TrimPrefix(adminURL(t), "postgres://")
	pgHost = pgHost[:strings.Index(pgHost, "/")] // user@host:port
	cases := []struct {
		name, env, value string
		sqlDB            string // database the injected SQL may have created
	}{
		{name: "redis port runs a command", env: EnvRedis,
			value: "redis://127.0.0.1:6379;touch " + marker + ";#/0"},
		{name: "redis host runs a command", env: EnvRedis,
			value: "redis://$(touch${IFS}" + marker + ")127.0.0.1:6379/0"},
		{name: "amqp port runs a command", env: EnvAMQP,
			value: "amqp://guest:guest@127.0.0.1:5672;touch " + marker + ";#/"},
		{name: "amqp host in backquotes", env: EnvAMQP,
			value: "amqp://guest:guest@`touch${IFS}" + marker + "`127.0.0.1:5672/"},
		{name: "postgres port runs a command", env: EnvPostgres,
			value: "postgres://" + pgHost + ";touch " + marker + ";#/test?sslmode=disable"},
		{name: "postgres database name closes a string literal", env: EnvPostgres,
			value: "postgres://" + pgHost + "/x';create table " + marker + "();--?sslmode=disable",
			sqlDB: "x';create table " + marker + "();--"},
		{name: "postgres database name closes an identifier", env: EnvPostgres,
			value: "postgres://" + pgHost + "/" + marker + "_db\";create table " + marker + "();--?sslmode=disable",
			sqlDB: marker + "_db"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, script := copyScripts(t)
			if tc.sqlDB != "" {
				t.Cleanup(func() {
					psqlAdmin(t, `drop table if exists :"m"; drop database if exists :"db"`, "m="+marker, "db="+tc.sqlDB)
				})
			}
			_, stderr, err := runScript(t, script, []string{tc.env + "=" + tc.value})
			if _, serr := os.Stat(filepath.Join(dir, marker)); serr == nil {
				t.Errorf("the injected shell command ran (%s exists)", marker)
			}
			if tc.sqlDB != "" {
				if n := psqlAdmin(t, `select count(*) from pg_tables where tablename = :'m'`, "m="+marker); n != "0" {
					t.Errorf("the injected SQL statement ran (table %s exists in database postgres)", marker)
				}
			}
			if err == nil {
				t.Errorf("exit status 0, want a refusal; stderr:\n%s", stderr)
			} else if !strings.Contains(stderr, tc.env) {
				t.Errorf("the refusal does not name %s; stderr:\n%s", tc.env, stderr)
			}
			if strings.Contains(stderr, marker) {
				t.Errorf("the refusal repeats the rejected value; stderr:\n%s", stderr)
			}
		})
	}
}

// TestServicesScriptParsesURLs checks that the strict parsing in
// scripts/services.sh still accepts the URL forms the tests and users need.
func TestServicesScriptParsesURLs(t *testing.T) {
	_, script := copyScripts(t)
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"defaults", nil,
			"amqp 127.0.0.1 5672\nredis 127.0.0.1 6379\npostgres 127.0.0.1 5432\ndatabase test\n"},
		{"names, IPv6, default ports, encoded passwords, vhost, query", []string{
			EnvAMQP + "=amqps://user:p%40ss@rabbit.example.com/%2f",
			EnvRedis + "=rediss://:s3cret@[::1]:6380/2",
			EnvPostgres + "=postgres://app:pw@db-1.internal:6543/orders_test?sslmode=require&application_name=ci",
		}, "amqp rabbit.example.com 5672\nredis [::1] 6380\npostgres db-1.internal 6543\ndatabase orders_test\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Unset overrides from the caller's environment.
			env := append([]string{EnvAMQP + "=", EnvRedis + "=", EnvPostgres + "="}, tc.env...)
			out, stderr, err := runScript(t, script, env, "--check")
			if err != nil {
				t.Fatalf("%v; stderr:\n%s", err, stderr)
			}
			if out != tc.want {
				t.Errorf("parsed\n%s\nwant\n%s", out, tc.want)
			}
		})
	}
}

// TestServicesScriptCreatesDatabase runs scripts/services.sh with a database
// that does not exist yet, whose name needs quoting in SQL (a hyphen): the
// script must create exactly that database.
func TestServicesScriptCreatesDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs scripts/services.sh: -short")
	}
	db := fmt.Sprintf("uf-services-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	pgHost := strings.TrimPrefix(adminURL(t), "postgres://")
	pgHost = pgHost[:strings.Index(pgHost, "/")]
	t.Cleanup(func() { psqlAdmin(t, `drop database if exists :"db"`, "db="+db) })
	_, script := copyScripts(t)
	_, stderr, err := runScript(t, script, []string{EnvPostgres + "=postgres://" + pgHost + "/" + db + "?sslmode=disable"}, "--no-clusters")
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr)
	}
	if n := psqlAdmin(t, `select count(*) from pg_database where datname = :'db'`, "db="+db); n != "1" {
		t.Fatalf("database %s: %s found, want 1; stderr:\n%s", db, n, stderr)
	}
}

// TestComposeFile checks docker-compose.yml (Docker need not run): every image
// is pinned to an exact version and every published port is bound to
// 127.0.0.1, since the services use the well-known test credentials.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	image := regexp.MustCompile(`^[a-z0-9./-]+:[0-9]+\.[0-9]+(\.[0-9]+)?(-[a-z0-9]+)*$`)
	port := regexp.MustCompile(`^"127\.0\.0\.1:[0-9]+:[0-9]+"$`)
	images, ports, inPorts := 0, 0, false
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "image:"):
			images++
			if v := strings.TrimSpace(strings.TrimPrefix(trimmed, "image:")); !image.MatchString(v) {
				t.Errorf("line %d: image %s is not pinned to an exact version", i+1, v)
			}
		case trimmed == "ports:":
			inPorts = true
			continue
		case inPorts && strings.HasPrefix(trimmed, "- "):
			ports++
			if v := strings.TrimPrefix(trimmed, "- "); !port.MatchString(v) {
				t.Errorf("line %d: port %s is not bound to 127.0.0.1", i+1, v)
			}
			continue
		}
		inPorts = false
	}
	if images < 4 || ports < 4 {
		t.Fatalf("found %d images and %d ports: the file's layout changed, update this test", images, ports)
	}
}

// FuzzServicesScriptURL feeds arbitrary REDIS_URL values to the strict parser
// of scripts/services.sh (--check): a value is either understood, with a host
// and port of the accepted shapes, or refused with a message naming the
// variable and not repeating the value; nothing in it is ever run.
func FuzzServicesScriptURL(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379/0", "redis://[::1]:6380/1", "rediss://:p%40ss@h.example/2",
		"redis://127.0.0.1:6379;touch x;#/0", "redis://$(touch x)h/0", "redis://`touch x`h/0",
		"redis://h:0/", "redis://h:65536/", "redis://a@b@h/", "redis://h/0?a=b&c=d", "redis://h/0?a=$(x)",
	} {
		f.Add(s)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		f.Skip("no bash")
	}
	// The messages the script can refuse REDIS_URL with.
	src, err := os.ReadFile(filepath.Join(repoRoot(f), "scripts", "services.sh"))
	if err != nil {
		f.Fatal(err)
	}
	refusals := map[string]bool{}
	for _, m := range regexp.MustCompile(`refuse (?:"\$name"|REDIS_URL) "([^"$]+)"`).FindAllStringSubmatch(string(src), -1) {
		refusals["services: "+EnvRedis+": "+m[1]+"; refusing to go on (expected scheme://[user[:password]@]host[:port][/path][?key=value&...])\n"] = true
	}
	if len(refusals) < 5 {
		f.Fatalf("found %d refusal messages in services.sh: update this test", len(refusals))
	}
	hostRE := regexp.MustCompile(`^redis (\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?) ([0-9]{1,5})$`)
	f.Fuzz(func(t *testing.T, value string) {
		if value == "" || strings.ContainsRune(value, 0) {
			return // unset, or not representable in an environment
		}
		dir, script := copyScripts(t)
		cmd := exec.Command(bash, script, "--check")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), EnvRedis+"="+value, EnvAMQP+"=", EnvPostgres+"=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("REDIS_URL=%q: the script created files in its directory: %v", value, entries)
		}
		if err != nil {
			// The refusal is one of the script's fixed messages, so it
			// cannot repeat the value.
			if !refusals[stderr.String()] {
				t.Fatalf("REDIS_URL=%q refused with %q, not one of the script's messages", value, stderr.String())
			}
			return
		}
		var redisLine string
		for _, l := range strings.Split(stdout.String(), "\n") {
			if strings.HasPrefix(l, "redis ") {
				redisLine = l
			}
		}
		m := hostRE.FindStringSubmatch(redisLine)
		if m == nil {
			t.Fatalf("REDIS_URL=%q accepted as %q", value, redisLine)
		}
		if p, _ := strconv.Atoi(m[3]); p < 1 || p > 65535 {
			t.Fatalf("REDIS_URL=%q accepted with port %s", value, m[3])
		}
	})
}

// TestServicesScriptKeepsThePasswordOffPsqlsCommandLine: a POSTGRES_URL
// password reaches psql through PGPASSWORD (percent-decoded), never on its
// command line, where ps shows it. A stand-in psql records what it got.
func TestServicesScriptKeepsThePasswordOffPsqlsCommandLine(t *testing.T) {
	pgHost := strings.TrimPrefix(adminURL(t), "postgres://")
	pgHost = pgHost[:strings.Index(pgHost, "/")]
	if i := strings.LastIndex(pgHost, "@"); i >= 0 {
		pgHost = pgHost[i+1:]
	}
	bin := t.TempDir()
	record := filepath.Join(bin, "record")
	fake := "#!/bin/sh\nprintf 'argv=%s\\n' \"$*\" >>" + record + "\nprintf 'env=%s\\n' \"$PGPASSWORD\" >>" + record + "\necho 1\n"
	if err := os.WriteFile(filepath.Join(bin, "psql"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	_, script := copyScripts(t)
	env := []string{
		EnvPostgres + "=postgres://postgres:s3cr%40t@" + pgHost + "/test?sslmode=disable",
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
	}
	if _, stderr, err := runScript(t, script, env, "--no-clusters"); err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr)
	}
	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(got)), "\n") {
		switch {
		case strings.HasPrefix(line, "argv=") && strings.Contains(line, "s3cr"):
			t.Fatalf("the password is on psql's command line: %s", line)
		case strings.HasPrefix(line, "env=") && line != "env=s3cr@t":
			t.Fatalf("psql got %q, want PGPASSWORD=s3cr@t", line)
		}
	}
	if !strings.Contains(string(got), "argv=") {
		t.Fatal("psql was not called: the test proves nothing")
	}
}
