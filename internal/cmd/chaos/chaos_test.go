package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// program builds this command once (with -race when the tests have it), so
// that the consumer process it starts and kills is a real process.
func program(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "chaos-test-"); buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "chaos")
		args := []string{"build", "-o", buildBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// The result lines: each scenario prints its checks, its faults and its
// final line, in that order.
var (
	finalRe        = regexp.MustCompile(`^chaos: messages=(\d+) effects=(\d+) duplicates=(\d+) lost=(\d+) faults=(\d+)$`)
	faultsRe       = regexp.MustCompile(`^faults: extra_copies=(\d+) handler_failures=(\d+) \(panics (\d+)\) rabbitmq_connection_kills=(\d+) consumer_sigkills=(\d+) kafka_restarts=(\d+) dropped=(\d+)$`)
	checksRe       = regexp.MustCompile(`^checks: rows=(\d+) distinct=(\d+) unexpected=(\d+) misrouted=(\d+) replay_new_effects=(\d+) replayed_records=(\d+) left_in_queue=(\d+)$`)
	outboxFinalRe  = regexp.MustCompile(`^chaos-outbox: orders=(\d+) events=(\d+) effects=(\d+) duplicates=(\d+) lost=(\d+) faults=(\d+)$`)
	outboxFaultsRe = regexp.MustCompile(`^outbox-faults: republished=(\d+) handler_failures=(\d+) \(panics (\d+)\) rabbitmq_connection_kills=(\d+) consumer_sigkills=(\d+) relay_sigkills=(\d+) kafka_restarts=(\d+) postgres_restarts=(\d+) dropped=(\d+)$`)
	outboxChecksRe = regexp.MustCompile(`^outbox-checks: charges=(\d+) charged_orders=(\d+) receipts=(\d+) mismatched=(\d+) unexpected=(\d+) pending=(\d+) dead=(\d+) replay_new_receipts=(\d+) replayed_records=(\d+) left_in_queue=(\d+) write_retries=(\d+)$`)
	scaleFinalRe   = regexp.MustCompile(`^chaos-scale: processes=(\d+) messages=(\d+) effects=(\d+) duplicates=(\d+) lost=(\d+) rebalances=(\d+) faults=(\d+)$`)
	scaleFaultsRe  = regexp.MustCompile(`^scale-faults: extra_copies=(\d+) handler_failures=(\d+) \(panics (\d+)\) consumer_sigkills=(\d+) scale_outs=(\d+) scale_ins=(\d+) rabbitmq_node_stops=(\d+) redis_primary_kills=(\d+) kafka_leader_moves=(\d+) dropped=(\d+) forgotten=(\d+)$`)
	scaleChecksRe  = regexp.MustCompile(`^scale-checks: rows=(\d+) distinct=(\d+) unexpected=(\d+) mismatched=(\d+) forward_processed=(\d+) forward_duplicates=(\d+) forwarded_twice=(\d+) recheck_answered=(\d+) recheck_forwarded=(\d+) replay_new_effects=(\d+) replayed_records=(\d+) left_in_queue=(\d+) dead_letters=(\d+)$`)
)

var (
	scaleFinalNames  = []string{"processes", "messages", "effects", "duplicates", "lost", "rebalances", "faults"}
	scaleFaultsNames = []string{"extra_copies", "handler_failures", "panics", "sigkills", "scale_outs", "scale_ins", "node_stops", "primary_kills", "leader_moves", "dropped", "forgotten"}
	scaleChecksNames = []string{"rows", "distinct", "unexpected", "mismatched", "forward_processed", "forward_duplicates", "forwarded_twice", "recheck_answered", "recheck_forwarded", "replay_new", "replayed", "left_in_queue", "dead_letters"}
)

// outcome is one run of the program; the maps are nil for a scenario that
// did not run.
type outcome struct {
	code           int
	stdout, stderr string
	final          map[string]int64 // messages, effects, duplicates, lost, faults
	faults         map[string]int64
	checks         map[string]int64
	outbox         map[string]int64 // orders, events, effects, duplicates, lost, faults
	outboxFaults   map[string]int64
	outboxChecks   map[string]int64
	scale          map[string]int64 // processes, messages, effects, duplicates, lost, rebalances, faults
	scaleFaults    map[string]int64
	scaleChecks    map[string]int64
}

func match(t *testing.T, re *regexp.Regexp, line string, names ...string) map[string]int64 {
	t.Helper()
	m := re.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("line %q does not match %s", line, re)
	}
	out := map[string]int64{}
	for i, n := range names {
		v, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = v
	}
	return out
}

// scenarioLines finds a scenario's three result lines, which must follow
// each other, checks then faults then the final line, each exactly once;
// nil when the final line's prefix does not appear at all.
func scenarioLines(t *testing.T, lines []string, checks, faults, final string) []string {
	t.Helper()
	at, n := -1, 0
	for i, l := range lines {
		if strings.HasPrefix(l, final) {
			at, n = i, n+1
		}
	}
	if n == 0 {
		return nil
	}
	if n != 1 || at < 2 || !strings.HasPrefix(lines[at-1], faults) || !strings.HasPrefix(lines[at-2], checks) {
		t.Fatalf("want one %q line, after its %q and %q lines; got %d", final, checks, faults, n)
	}
	return lines[at-2 : at+1]
}

// runProgram runs the program against the test services and parses the
// result lines of the scenarios it ran.
func runProgram(t *testing.T, timeout time.Duration, args ...string) outcome {
	t.Helper()
	// The URLs reach the program through the environment (AMQP_URL,
	// POSTGRES_URL), not its command line, where every local user can read them.
	testenv.AMQPURL(t)
	testenv.PostgresURL(t)
	ctl := testenv.Tool(t, "rabbitmqctl")
	bin := program(t)
	ctx := testenv.Context(t, 2*timeout+30*time.Second) // -timeout is per scenario
	cmd := exec.CommandContext(ctx, bin, append([]string{"-rabbitmqctl", ctl, "-timeout", timeout.String()}, args...)...)
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	o := outcome{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("chaos %s: exit %d after %v\n%s\nstderr:\n%s", strings.Join(args, " "), o.code, time.Since(start).Round(time.Millisecond), o.stdout, o.stderr)
	lines := strings.Split(strings.TrimRight(o.stdout, "\n"), "\n")
	if l := scenarioLines(t, lines, "checks: ", "faults: ", "chaos: "); l != nil {
		o.checks = match(t, checksRe, l[0], "rows", "distinct", "unexpected", "misrouted", "replay_new", "replayed", "left_in_queue")
		o.faults = match(t, faultsRe, l[1], "extra_copies", "handler_failures", "panics", "connection_kills", "sigkills", "kafka_restarts", "dropped")
		o.final = match(t, finalRe, l[2], "messages", "effects", "duplicates", "lost", "faults")
	}
	if l := scenarioLines(t, lines, "outbox-checks: ", "outbox-faults: ", "chaos-outbox: "); l != nil {
		o.outboxChecks = match(t, outboxChecksRe, l[0], "charges", "charged_orders", "receipts", "mismatched", "unexpected", "pending", "dead", "replay_new", "replayed", "left_in_queue", "write_retries")
		o.outboxFaults = match(t, outboxFaultsRe, l[1], "republished", "handler_failures", "panics", "connection_kills", "consumer_sigkills", "relay_sigkills", "kafka_restarts", "postgres_restarts", "dropped")
		o.outbox = match(t, outboxFinalRe, l[2], "orders", "events", "effects", "duplicates", "lost", "faults")
	}
	if l := scenarioLines(t, lines, "scale-checks: ", "scale-faults: ", "chaos-scale: "); l != nil {
		o.scaleChecks = match(t, scaleChecksRe, l[0], scaleChecksNames...)
		o.scaleFaults = match(t, scaleFaultsRe, l[1], scaleFaultsNames...)
		o.scale = match(t, scaleFinalRe, l[2], scaleFinalNames...)
	}
	if strings.Contains(o.stderr, "DATA RACE") {
		t.Errorf("the race detector reported a race")
	}
	return o
}

// wantLines fails the test unless exactly the scenarios named ran.
func (o outcome) wantLines(t *testing.T, messages, outbox bool) {
	t.Helper()
	if (o.final != nil) != messages || (o.outbox != nil) != outbox {
		t.Fatalf("result lines: message scenario %v (want %v), outbox scenario %v (want %v)", o.final != nil, messages, o.outbox != nil, outbox)
	}
}

// TestChaosShort runs the message scenario with 2000 messages: every count
// must be right, and every kind of fault must have happened.
func TestChaosShort(t *testing.T) {
	const n = 2000
	o := runProgram(t, 100*time.Second, "-n", strconv.Itoa(n), "-orders", "0", "-seed", "7")
	o.wantLines(t, true, false)
	if o.code != 0 {
		t.Errorf("exit status %d, want 0", o.code)
	}
	want := map[string]int64{"messages": n, "effects": n, "duplicates": 0, "lost": 0}
	for k, v := range want {
		if o.final[k] != v {
			t.Errorf("%s = %d, want %d", k, o.final[k], v)
		}
	}
	f := o.faults
	if sum := f["extra_copies"] + f["handler_failures"] + f["connection_kills"] + f["sigkills"] + f["kafka_restarts"]; sum != o.final["faults"] {
		t.Errorf("faults = %d, but the breakdown sums to %d", o.final["faults"], sum)
	}
	// Every message twice, a quarter three times; 20 % of the attempts fail.
	if f["extra_copies"] < n || f["extra_copies"] > n*3/2 {
		t.Errorf("extra copies %d, want between %d and %d", f["extra_copies"], n, n*3/2)
	}
	if f["handler_failures"] < n/10 || f["panics"] == 0 {
		t.Errorf("handler failures %d (panics %d): too few injected", f["handler_failures"], f["panics"])
	}
	if f["connection_kills"] < 4 || f["sigkills"] != 2 || f["kafka_restarts"] != 2 || f["dropped"] != 0 {
		t.Errorf("connection kills %d (want >= 4), SIGKILLs %d (want 2), Kafka restarts %d (want 2), dropped %d (want 0)",
			f["connection_kills"], f["sigkills"], f["kafka_restarts"], f["dropped"])
	}
	c := o.checks
	if c["unexpected"] != 0 || c["misrouted"] != 0 || c["replay_new"] != 0 || c["left_in_queue"] != 0 || c["distinct"] != n {
		t.Errorf("checks: %v", c)
	}
	if c["replayed"] < n { // the Kafka half, at least twice each
		t.Errorf("replay read %d records, want at least %d", c["replayed"], n)
	}
}

// TestChaosOutboxShort runs the outbox scenario with 500 orders, without
// the PostgreSQL restart (it would disturb every other test using the
// server; make chaos does it): every order must have one charge and one
// receipt that match it, and every kind of fault must have happened.
func TestChaosOutboxShort(t *testing.T) {
	const n = 500
	o := runProgram(t, 100*time.Second, "-n", "0", "-orders", strconv.Itoa(n), "-seed", "11")
	o.wantLines(t, false, true)
	if o.code != 0 {
		t.Errorf("exit status %d, want 0", o.code)
	}
	want := map[string]int64{"orders": n, "events": n, "effects": n, "duplicates": 0, "lost": 0}
	for k, v := range want {
		if o.outbox[k] != v {
			t.Errorf("%s = %d, want %d", k, o.outbox[k], v)
		}
	}
	f := o.outboxFaults
	if sum := f["republished"] + f["handler_failures"] + f["connection_kills"] + f["consumer_sigkills"] + f["relay_sigkills"] + f["kafka_restarts"] + f["postgres_restarts"]; sum != o.outbox["faults"] {
		t.Errorf("faults = %d, but the breakdown sums to %d", o.outbox["faults"], sum)
	}
	if f["republished"] == 0 || f["handler_failures"] < n/10 || f["panics"] == 0 {
		t.Errorf("republished %d, handler failures %d (panics %d): too few injected", f["republished"], f["handler_failures"], f["panics"])
	}
	if f["connection_kills"] != 2 || f["consumer_sigkills"] != 2 || f["relay_sigkills"] != 3 || f["kafka_restarts"] != 2 || f["postgres_restarts"] != 0 || f["dropped"] != 0 {
		t.Errorf("faults %v: want 2 connection kills, 2 consumer and 3 relay SIGKILLs, 2 Kafka restarts, no PostgreSQL restart, nothing dropped", f)
	}
	c := o.outboxChecks
	if c["charges"] != n || c["charged_orders"] != n || c["receipts"] != n || c["mismatched"] != 0 || c["unexpected"] != 0 ||
		c["pending"] != 0 || c["dead"] != 0 || c["replay_new"] != 0 || c["left_in_queue"] != 0 {
		t.Errorf("checks: %v", c)
	}
	if c["replayed"] < n {
		t.Errorf("replay read %d records, want at least %d", c["replayed"], n)
	}
}

// TestChaosCatchesDuplicates runs without the dedupe middleware: every
// message is published at least twice, and the replay reads every payment
// again, so every message and every order must be counted as applied more
// than once and the program must fail. This is what makes a passing
// TestChaosShort and TestChaosOutboxShort mean something.
func TestChaosCatchesDuplicates(t *testing.T) {
	const n, orders = 200, 100
	o := runProgram(t, 100*time.Second, "-n", strconv.Itoa(n), "-orders", strconv.Itoa(orders), "-seed", "3", "-no-dedupe")
	o.wantLines(t, true, true)
	if o.code != 1 {
		t.Errorf("exit status %d, want 1", o.code)
	}
	if o.final["duplicates"] != n || o.final["lost"] != 0 || o.final["effects"] < 2*n {
		t.Errorf("final counts %v: want duplicates=%d lost=0 effects>=%d", o.final, n, 2*n)
	}
	if o.checks["replay_new"] == 0 {
		t.Errorf("the replay without dedupe added no effects")
	}
	if o.outbox["duplicates"] != orders || o.outbox["lost"] != 0 || o.outbox["effects"] < 2*orders {
		t.Errorf("outbox counts %v: want duplicates=%d lost=0 effects>=%d", o.outbox, orders, 2*orders)
	}
	if o.outboxChecks["replay_new"] < orders {
		t.Errorf("the replay without dedupe added %d receipts, want at least %d", o.outboxChecks["replay_new"], orders)
	}
	if !strings.Contains(o.stderr, "FAILED") {
		t.Errorf("no FAILED explanation on stderr")
	}
}

// TestChaosCatchesLoss makes the last handler of each scenario acknowledge a
// fifth of the messages without their effect: the program must count each
// of them as lost, and fail.
func TestChaosCatchesLoss(t *testing.T) {
	const n, orders = 200, 100
	o := runProgram(t, 100*time.Second, "-n", strconv.Itoa(n), "-orders", strconv.Itoa(orders), "-seed", "5", "-drop-share", "0.2")
	o.wantLines(t, true, true)
	if o.code != 1 {
		t.Errorf("exit status %d, want 1", o.code)
	}
	// Each dropped message is recorded by the handler that dropped it.
	dropped := o.faults["dropped"]
	if dropped == 0 || o.final["lost"] != dropped || o.final["effects"] != n-dropped || o.final["duplicates"] != 0 {
		t.Errorf("final counts %v with %d dropped: want lost=%[2]d effects=%d duplicates=0", o.final, dropped, n-dropped)
	}
	dropped = o.outboxFaults["dropped"]
	if dropped == 0 || o.outbox["lost"] != dropped || o.outbox["effects"] != orders-dropped || o.outbox["duplicates"] != 0 {
		t.Errorf("outbox counts %v with %d dropped: want lost=%[2]d effects=%d duplicates=0", o.outbox, dropped, orders-dropped)
	}
	for _, want := range []string{"FAILED", "messages never applied", "orders without a receipt"} {
		if !strings.Contains(o.stderr, want) {
			t.Errorf("stderr does not say %q", want)
		}
	}
}

// TestFailureRate: the injected failures are a seeded 20 % of attempts,
// a quarter of them panics, and the same for the same seed.
func TestFailureRate(t *testing.T) {
	for _, rate := range []float64{0, 0.2, 0.5} {
		t.Run(strconv.FormatFloat(rate, 'f', -1, 64), func(t *testing.T) {
			c := chances{seed: 42, failRate: rate}
			c2 := chances{seed: 43, failRate: rate}
			const tries = 200000
			var fails, panics, differ int
			for i := range tries {
				m := &consumer.Message{ID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(strconv.Itoa(i/4))), Attempt: 1 + i%4}
				f, p := c.failure(m)
				if again, _ := c.failure(m); again != f {
					t.Fatal("not deterministic")
				}
				if f2, _ := c2.failure(m); f2 != f {
					differ++
				}
				if f {
					fails++
					if p {
						panics++
					}
				}
			}
			if got := float64(fails) / tries; got < rate-0.01 || got > rate+0.01 {
				t.Errorf("failure rate %.4f, want %.2f", got, rate)
			}
			if rate > 0 {
				if got := float64(panics) / float64(fails); got < 0.2 || got > 0.3 {
					t.Errorf("panics are %.3f of failures, want about 0.25", got)
				}
				if differ == 0 {
					t.Errorf("another seed fails the same attempts")
				}
			}
		})
	}
}

// TestDropShare: the dropped messages are a seeded share of the message
// IDs, independent of the failures' decisions.
func TestDropShare(t *testing.T) {
	for _, share := range []float64{0, 0.01, 0.2} {
		t.Run(strconv.FormatFloat(share, 'f', -1, 64), func(t *testing.T) {
			c := chances{seed: 42, failRate: 0.2, dropShare: share}
			const tries = 200000
			var drops, both int
			for i := range tries {
				m := &consumer.Message{ID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(strconv.Itoa(i))), Attempt: 1}
				if c.drop(m.ID) {
					drops++
					if f, _ := c.failure(m); f {
						both++
					}
				}
			}
			if got := float64(drops) / tries; got < share*0.9 || got > share*1.1 {
				t.Errorf("drop share %.4f, want %.2f", got, share)
			}
			if share > 0.1 {
				if got := float64(both) / float64(drops); got < 0.15 || got > 0.25 {
					t.Errorf("%.3f of the dropped messages fail their first attempt, want about 0.2: the decisions are correlated", got)
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"defaults", nil, true},
		{"scale only", []string{"-n", "0", "-orders", "0", "-scale", "20000", "-procs", "3"}, true},
		{"scale measured", []string{"-n", "0", "-orders", "0", "-scale", "5000", "-procs", "1", "-measure"}, true},
		{"scale forget", []string{"-n", "0", "-orders", "0", "-scale", "1000", "-forget"}, true},
		{"forget without scale", []string{"-forget"}, false},
		{"forget measured", []string{"-scale", "1000", "-measure", "-forget"}, false},
		{"no procs", []string{"-scale", "1000", "-procs", "0"}, false},
		{"too many procs", []string{"-scale", "1000", "-procs", "7"}, false},
		{"negative scale", []string{"-scale", "-1"}, false},
		{"short", []string{"-n", "2000", "-seed", "9", "-transports", "kafka"}, true},
		{"outbox only", []string{"-n", "0", "-orders", "500", "-relays", "3", "-restart-postgres", "true"}, true},
		{"drop", []string{"-drop-share", "0.01"}, true},
		{"nothing to do", []string{"-n", "0", "-orders", "0"}, false},
		{"nothing to do, scale 0", []string{"-n", "0", "-orders", "0", "-scale", "0"}, false},
		{"negative", []string{"-n", "-1"}, false},
		{"no relay", []string{"-relays", "0"}, false},
		{"bad transport", []string{"-transports", "nats"}, false},
		{"bad rate", []string{"-fail", "1"}, false},
		{"bad drop share", []string{"-drop-share", "0.9"}, false},
		{"short lease", []string{"-lease", "10ms"}, false},
		{"stray argument", []string{"extra"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseOptions(tt.args, &bytes.Buffer{})
			if (err == nil) != tt.ok {
				t.Fatalf("parseOptions(%q) = %v, want ok=%v", tt.args, err, tt.ok)
			}
			if tt.name == "defaults" && (o.n != 20000 || o.orders != 5000 || o.relays != 2 || o.failRate != 0.2 || o.dropShare != 0 ||
				o.restartPostgres != "" || !o.rabbit() || !o.kafka() || o.scale != 0 || o.procs != 3 || o.measure || o.forget) {
				t.Errorf("defaults %+v", o)
			}
		})
	}
}

// TestWorkerArgs: a worker configuration survives the trip through the
// command line and the environment.
func TestWorkerArgs(t *testing.T) {
	for _, role := range []string{roleMessages, roleBilling, roleReceipts, roleRelay, roleForward, roleApply} {
		t.Run(role, func(t *testing.T) {
			in := workerConfig{
				role: role, amqp: "amqp://u:p@h:5672/", postgres: "postgres://h/db", kafka: "127.0.0.1:9092",
				queue: "q", topic: "t", group: "g", tables: tables{prefix: "chaos_x"}, scope: role,
				chances: chances{seed: 9, failRate: 0.25, dropShare: 0.125}, lease: 3 * time.Second, timeout: 1500 * time.Millisecond,
				gen: 4, rabbit: true, kafkaOn: role != roleBilling, noDedupe: true, verbose: true,
			}
			if role == roleForward || role == roleApply {
				in.kafka = "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
				in.failover = "amqp://u:p@h:5682/,amqp://u:p@h:5683/"
				in.redis = "127.0.0.1:7000,127.0.0.1:7001"
				in.partitions, in.noDedupe, in.cpuProfile = 6, false, "/tmp/profiles"
			}
			for _, kv := range in.env() {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			out, err := parseWorker(in.args())
			if err != nil {
				t.Fatal(err)
			}
			if out != in {
				t.Errorf("got %+v\nwant %+v", out, in)
			}
			for _, a := range in.args() {
				if strings.Contains(a, "p@") {
					t.Errorf("argument %q holds a password", a)
				}
			}
		})
	}
}

// TestScaleLines: the scale scenario's result lines have the form the
// tests read, and faults= is the sum of the faults line (without the
// -forget sabotage, which is not a fault).
func TestScaleLines(t *testing.T) {
	res := scaleResult{
		procs: 3, messages: 20000, effects: 20001, distinct: 19999, duplicates: 2, lost: 1, unexpected: 1, mismatched: 3,
		fwdProcessed: 20010, fwdDuplicates: 25000, forwardedTwice: 4, recheckNew: 5, recheckProcessed: 6, recheckAnswered: 20000,
		replayNew: 7, replayed: 25000, leftInQueue: 8, deadLetters: 9, rebalances: 10, extraCopies: 25057,
		handlerFailures: 10000, panics: 2500, dropped: 11, moves: 72, forgotten: 12,
		kinds:   map[faultKind]int64{consumerKill: 4, scaleOut: 1, scaleIn: 1, nodeStop: 1, primaryKill: 1, forgetKind: 1},
		counted: true,
	}
	var out bytes.Buffer
	res.print(&env{out: &out})
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	l := scenarioLines(t, lines, "scale-checks: ", "scale-faults: ", "chaos-scale: ")
	if l == nil {
		t.Fatalf("no chaos-scale line in %q", out.String())
	}
	final := match(t, scaleFinalRe, l[2], scaleFinalNames...)
	f := match(t, scaleFaultsRe, l[1], scaleFaultsNames...)
	c := match(t, scaleChecksRe, l[0], scaleChecksNames...)
	want := map[string]int64{"processes": 3, "messages": 20000, "effects": 20001, "duplicates": 2, "lost": 1, "rebalances": 10,
		"faults": 25057 + 10000 + 4 + 1 + 1 + 1 + 1 + 72}
	for k, v := range want {
		if final[k] != v {
			t.Errorf("%s = %d, want %d", k, final[k], v)
		}
	}
	if sum := f["extra_copies"] + f["handler_failures"] + f["sigkills"] + f["scale_outs"] + f["scale_ins"] + f["node_stops"] + f["primary_kills"] + f["leader_moves"]; sum != final["faults"] {
		t.Errorf("faults = %d, but the breakdown sums to %d", final["faults"], sum)
	}
	if f["forgotten"] != 12 || f["dropped"] != 11 || c["forwarded_twice"] != 4 || c["recheck_forwarded"] != 5 || c["dead_letters"] != 9 {
		t.Errorf("faults %v, checks %v", f, c)
	}
	// Every count that is off is a problem.
	if p := res.problems(); len(p) != 10 {
		t.Errorf("%d problems, want 10: %q", len(p), p)
	}
	res = scaleResult{procs: 1, messages: 5, effects: 5, distinct: 5, recheckAnswered: 5, counted: true}
	if p := res.problems(); len(p) != 0 {
		t.Errorf("problems of a clean run: %q", p)
	}
	res.wantRebalance = true
	if p := res.problems(); len(p) != 1 || !strings.Contains(p[0], "rebalance") {
		t.Errorf("problems of a run whose membership changed without a rebalance: %q", p)
	}
}

// TestJoinedGeneration: the appliers count rebalances from kafka-go's log
// line for a join; a consumer group joining the in-process broker must
// produce it with the generation the group reports.
func TestJoinedGeneration(t *testing.T) {
	for _, tt := range []struct {
		format string
		args   []any
		gen    int32
		ok     bool
	}{
		{"Joined group %s as member %s in generation %d", []any{"g", "m", int32(7)}, 7, true},
		{"joined group %s as member %s in generation %d", []any{"g", "m", int32(7)}, 0, false}, // the join request, not the generation
		{"Joined group %s as member %s in generation %d", []any{"g", "m", 7}, 0, false},
		{"Leaving group %s, member %s", []any{"g", "m"}, 0, false},
	} {
		gen, ok := joinedGeneration(tt.format, tt.args)
		if gen != tt.gen || ok != tt.ok {
			t.Errorf("joinedGeneration(%q, %v) = %d, %v; want %d, %v", tt.format, tt.args, gen, ok, tt.gen, tt.ok)
		}
	}

	k, err := kafkatest.New(kafkatest.WithMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	ctx := testenv.Context(t, time.Minute)
	if err := k.CreateTopic(ctx, "joins", 1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []int32
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID: "joins", Brokers: k.Brokers(), Topics: []string{"joins"},
		HeartbeatInterval: 100 * time.Millisecond, SessionTimeout: time.Second, RebalanceTimeout: time.Second,
		Logger: kafkago.LoggerFunc(func(format string, args ...any) {
			if gen, ok := joinedGeneration(format, args); ok {
				mu.Lock()
				seen = append(seen, gen)
				mu.Unlock()
			}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	gen, err := cg.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != gen.ID {
		t.Errorf("generations seen in the log %v, want [%d]", seen, gen.ID)
	}
}
