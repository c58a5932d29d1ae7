package outbox_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// The crash tests run this test binary again as a child process (an
// environment variable says what to do), kill it with SIGKILL at a chosen
// moment, and check what a relay started afterwards publishes.
const (
	envChild = "OUTBOX_TEST_CHILD"
	envArgs  = "OUTBOX_TEST_ARGS"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(child(mode, strings.Split(os.Getenv(envArgs), "\x1f")))
	}
	os.Exit(m.Run())
}

// childArgs are what the child needs: database URL, outbox table, orders
// table, AMQP URL, queue, number of orders.
type childArgs struct {
	pg, table, orders, amqp, queue string
	n                              int
}

func (a childArgs) env() string {
	return strings.Join([]string{a.pg, a.table, a.orders, a.amqp, a.queue, strconv.Itoa(a.n)}, "\x1f")
}

// orderMsg is the message of order i.
func orderMsg(i int) publisher.Message {
	return publisher.Message{Type: "order.placed", Key: []any{fmt.Sprintf("SO-%04d", i)}, Body: []byte(fmt.Sprintf(`{"order":%d}`, i))}
}

// child is the process under test. In one transaction per order it
// inserts the order row and enqueues order.placed, commits, and prints
// "committed". Then it runs a relay whose publisher, on its first batch,
// prints what it does and hangs, to be killed:
//
//   - mode "hang": it publishes nothing ("publishing N");
//   - mode "half": it publishes the first half of the batch through
//     RabbitMQ and waits for the broker's confirms ("confirmed K of N").
func child(mode string, args []string) int {
	if len(args) != 6 {
		fmt.Fprintln(os.Stderr, "child: bad arguments")
		return 2
	}
	a := childArgs{pg: args[0], table: args[1], orders: args[2], amqp: args[3], queue: args[4]}
	a.n, _ = strconv.Atoi(args[5])
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "child:", err); return 2 }
	pool, err := pgxpool.New(ctx, a.pg)
	if err != nil {
		return fail(err)
	}
	store, err := pgoutbox.New(pool, pgoutbox.WithTable(a.table))
	if err != nil {
		return fail(err)
	}
	pub, err := pgoutbox.NewPublisher(store, "orders", gen)
	if err != nil {
		return fail(err)
	}
	for i := range a.n {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+a.orders+" (n) VALUES ($1)", i); err != nil {
				return err
			}
			return pub.Publish(pgoutbox.NewContext(ctx, tx), orderMsg(i))
		})
		if err != nil {
			return fail(err)
		}
	}
	fmt.Println("committed")
	rp, err := rabbitpub.New(a.amqp, gen, rabbitpub.WithRoutingKey(func(*publisher.Message) string { return a.queue }))
	if err != nil {
		return fail(err)
	}
	hang := &hanging{real: rp, mode: mode}
	relay, err := outbox.NewRelay(store, map[string]publisher.Publisher{"orders": hang}, outbox.WithWorkers(1), outbox.WithBatchSize(a.n))
	if err != nil {
		return fail(err)
	}
	_ = relay.Run(ctx) // until killed
	return 0
}

// hanging is the child's publisher: see child.
type hanging struct {
	real publisher.Publisher
	mode string
}

func (h *hanging) Publish(ctx context.Context, m publisher.Message) error {
	return h.PublishBatch(ctx, m)
}

func (h *hanging) PublishBatch(ctx context.Context, msgs ...publisher.Message) error {
	if h.mode == "half" {
		half := msgs[:len(msgs)/2]
		if err := h.real.PublishBatch(ctx, half...); err != nil {
			fmt.Println("error", err)
			select {}
		}
		ids := make([]string, len(half))
		for i, m := range half {
			ids[i] = m.ID.String()
		}
		fmt.Printf("confirmed %d of %d: %s\n", len(half), len(msgs), strings.Join(ids, ","))
	} else {
		fmt.Printf("publishing %d\n", len(msgs))
	}
	select {} // killed here
}

// runChild starts the child in mode and kills it with SIGKILL once it
// printed a line starting with at; it returns the child's output lines.
func runChild(t *testing.T, mode string, a childArgs, at string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envArgs+"="+a.env())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var got []string
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("child exited before %q: %v", at, got)
			}
			got = append(got, l)
			if !strings.HasPrefix(l, at) {
				continue
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, out)
			if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("child: %v, want killed", err)
			}
			return got
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("child did not print %q: %v", at, got)
		}
	}
}

// crashSetup makes the tables and queue of a crash test.
func crashSetup(t *testing.T, n int) (*pgxpool.Pool, *pgoutbox.Store, *rabbit, childArgs) {
	t.Helper()
	pool := newPool(t)
	s := newStore(t, pool)
	rb := newRabbit(t)
	orders := testenv.Name(t, "orders")
	ctx := testenv.Context(t, 10*time.Second)
	if _, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (n int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.DropTables(t, orders) })
	return pool, s, rb, childArgs{pg: testenv.PostgresURL(t), table: unquote(s.Table()), orders: orders,
		amqp: rb.url, queue: rb.queue, n: n}
}

// TestCrashAfterCommit: a process killed between the commit of its
// transaction and the publication of the message it enqueued — here while
// its relay held the message, about to publish it — loses nothing: a relay
// started afterwards publishes the message with the ID it was stored with.
func TestCrashAfterCommit(t *testing.T) {
	const n = 3
	pool, s, rb, a := crashSetup(t, n)
	ds := rb.consume(t)
	lines := runChild(t, "hang", a, "publishing")
	if lines[0] != "committed" || lines[1] != fmt.Sprintf("publishing %d", n) {
		t.Fatalf("child printed %v", lines)
	}
	var orders int
	if err := pool.QueryRow(testenv.Context(t, 10*time.Second), "SELECT count(*) FROM "+a.orders).Scan(&orders); err != nil || orders != n {
		t.Fatalf("%d orders committed (%v), want %d", orders, err, n)
	}
	quiet(t, ds, 200*time.Millisecond) // nothing was published
	if got := countRows(t, pool, s, outbox.Pending); got != n {
		t.Fatalf("%d pending rows after the kill, want %d", got, n)
	}
	runRelay(t, s, map[string]publisher.Publisher{"orders": rb.publisher(t)})
	got := collect(t, ds, n, 30*time.Second)
	for i, d := range got {
		if want := idOf(t, orderMsg(i)).String(); d.MessageId != want {
			t.Errorf("message %d: ID %s, want %s", i, d.MessageId, want)
		}
	}
	quiet(t, ds, 300*time.Millisecond)
	waitFor(t, 10*time.Second, "every row dispatched", func() bool { return countRows(t, pool, s, outbox.Dispatched) == n })
}

// TestCrashMidBatch: a relay killed in the middle of a batch — half of it
// confirmed by the broker, half not yet sent — marked nothing; a relay
// started afterwards publishes the batch again with the same IDs, so the
// unconfirmed half arrives once and the confirmed half twice (duplicates
// consumers drop by ID).
func TestCrashMidBatch(t *testing.T) {
	const n = 10
	pool, s, rb, a := crashSetup(t, n)
	ds := rb.consume(t)
	lines := runChild(t, "half", a, "confirmed")
	confirmed := strings.Split(lines[len(lines)-1][strings.Index(lines[len(lines)-1], ": ")+2:], ",")
	if len(confirmed) != n/2 {
		t.Fatalf("child printed %v", lines)
	}
	first := collect(t, ds, n/2, 30*time.Second)
	for i, d := range first {
		if d.MessageId != confirmed[i] {
			t.Fatalf("before the kill: message %s, want %s", d.MessageId, confirmed[i])
		}
	}
	if got := countRows(t, pool, s, outbox.Pending); got != n {
		t.Fatalf("%d pending rows after the kill, want %d (nothing was marked)", got, n)
	}
	runRelay(t, s, map[string]publisher.Publisher{"orders": rb.publisher(t)})
	again := collect(t, ds, n, 30*time.Second)
	for i, d := range again {
		if want := idOf(t, orderMsg(i)).String(); d.MessageId != want {
			t.Errorf("after the restart, message %d: ID %s, want %s", i, d.MessageId, want)
		}
	}
	quiet(t, ds, 300*time.Millisecond)
	waitFor(t, 10*time.Second, "every row dispatched", func() bool { return countRows(t, pool, s, outbox.Dispatched) == n })
}
