package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/outbox"
)

// TestMain lets the test binary play the service: TestKillAfterCommit
// starts os.Executable() (this binary, under go test) with "serve" as its
// first argument.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serveMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// testConfig gives the test its own namespace (so its IDs are its own),
// schema, Redis prefix, queue, topic and directory, and removes them
// afterwards.
func testConfig(t *testing.T) config {
	t.Helper()
	cfg := config{
		AMQPURL:     testenv.AMQPURL(t),
		RedisURL:    testenv.RedisURL(t),
		PostgresURL: testenv.PostgresURL(t),
		Namespace:   testenv.Name(t, "shop") + ".example.com",
		Schema:      testenv.Name(t, "orders"),
		Queue:       testenv.Name(t, "billing"),
		Topic:       testenv.Name(t, "payments"),
		Dir:         t.TempDir(),
		CacheTTL:    time.Minute,
		Timeout:     60 * time.Second,
	}
	cfg.RedisPrefix = cfg.Schema + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s, err := openShop(ctx, cfg); err == nil {
			_, _ = s.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{cfg.Schema}.Sanitize()+" CASCADE")
			iter := s.rdb.Scan(ctx, 0, cfg.RedisPrefix+"*", 500).Iterator()
			for iter.Next(ctx) {
				s.rdb.Del(ctx, iter.Val())
			}
			s.Close()
		}
		if conn, err := amqp.Dial(cfg.AMQPURL); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(cfg.Queue, false, false, false)
				_, _ = ch.QueueDelete(cfg.Queue+consumer.DeadLetterSuffix, false, false, false)
			}
			conn.Close()
		}
	})
	return cfg
}

var summaryLine = regexp.MustCompile(`(?m)^orders: requests=4 orders=3 order_events=3 payments=3 payment_events=3 receipts=3 duplicates_skipped=(\d+) consistent=3 mismatches=0$`)

// TestRun runs the demo end to end against the real services.
func TestRun(t *testing.T) {
	cfg := testConfig(t)
	ctx := testenv.Context(t, 90*time.Second)
	var out bytes.Buffer
	if err := run(ctx, cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	orders := sampleOrders()
	// Three orders placed, the retried request finds the first; one
	// order.placed delivered twice, skipped once (a relay re-publishing on a
	// lost confirm could add more).
	if m := summaryLine.FindStringSubmatch(text); m == nil || m[1] == "0" {
		t.Errorf("output lacks a summary line matching %s with duplicates_skipped >= 1:\n%s", summaryLine, text)
	}
	for _, want := range []string{
		"POST /orders SO-1001 of ada@example.com again (a retried request): 200 OK, order ",
		"consistency: orders=3 consistent=3 mismatches=0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, ": 201 Created, order "); n != 3 {
		t.Errorf("%d orders created, want 3:\n%s", n, text)
	}

	// Look into the stores without the program's help.
	s, err := openShop(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var nOrders, nUsers, nItems, nProducts, nPayments int
	if err := s.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT user_id) FROM "+s.table("orders")+" WHERE status = 'paid'").Scan(&nOrders, &nUsers); err != nil {
		t.Fatal(err)
	}
	if err := s.pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT product_id) FROM "+s.table("order_items")).Scan(&nItems, &nProducts); err != nil {
		t.Fatal(err)
	}
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+s.table("payments")).Scan(&nPayments); err != nil {
		t.Fatal(err)
	}
	// Three paid orders of two customers ("Ada@Example.com " is
	// ada@example.com), four item rows of three products (USB-C-2M is in
	// two orders), one payment each.
	if nOrders != 3 || nUsers != 2 || nItems != 4 || nProducts != 3 || nPayments != 3 {
		t.Errorf("postgres: %d paid orders of %d users, %d items of %d products, %d payments; want 3, 2, 4, 3, 3", nOrders, nUsers, nItems, nProducts, nPayments)
	}
	for _, o := range orders {
		d, err := s.ids.doc(o)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.rdb.Exists(ctx, cfg.RedisPrefix+"order:"+d.ID.String()).Result(); err != nil || n != 1 {
			t.Errorf("redis %sorder:%s: exists=%d err=%v", cfg.RedisPrefix, d.ID, n, err)
		}
		h := d.ID.String()
		if _, err := os.Stat(cfg.Dir + "/" + h[:2] + "/" + h[2:4] + "/" + h + ".json"); err != nil {
			t.Errorf("file for %s: %v", d.ID, err)
		}
	}
}

// TestCheckFindsMismatches breaks each store in a different way and expects
// the validator to name each break.
func TestCheckFindsMismatches(t *testing.T) {
	cfg := testConfig(t)
	ctx := testenv.Context(t, 90*time.Second)
	if err := run(ctx, cfg, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	s, err := openShop(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	orders := sampleOrders()
	first, _ := s.expected(ctx, orders[0])
	second, _ := s.expected(ctx, orders[1])
	third, _ := s.expected(ctx, orders[2])

	// The cache lost one receipt, the file of another was overwritten with
	// someone else's, PostgreSQL holds the third under the wrong user and
	// the outbox lost the first order's payment.captured.
	if err := s.rdb.Del(ctx, s.cacheKey(first.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(s.filePath(third.ID))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.filePath(second.ID), other, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "UPDATE "+s.table("orders")+" SET user_id = $1 WHERE id = $2", second.UserID, third.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM "+s.outbox.Table()+" WHERE message_id = $1", first.PaymentMessageID); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	rep, err := s.check(ctx, orders, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.orders != 3 || rep.consistent != 0 {
		t.Errorf("orders=%d consistent=%d, want 3 and 0\n%s", rep.orders, rep.consistent, out.String())
	}
	for _, want := range []string{
		"MISMATCH redis " + s.cacheKey(first.ID) + " order: expected " + first.ID.String() + ", actual missing",
		"MISMATCH outbox payments payment.captured message " + first.PaymentMessageID.String() + ": expected dispatched, actual missing",
		"MISMATCH file " + s.filePath(second.ID) + " order id: expected " + second.ID.String() + ", actual " + third.ID.String(),
		"MISMATCH file " + s.filePath(second.ID) + " payment id: expected " + second.PaymentID.String() + ", actual " + third.PaymentID.String(),
		"MISMATCH postgres user_id: expected " + third.UserID.String() + ", actual " + second.UserID.String(),
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestMetrics runs the service in this process and reads its /metrics over
// HTTP as Prometheus would: the counters of sent and consumed messages
// move as orders go through, and the duplicate counter moves when a message
// is delivered twice.
func TestMetrics(t *testing.T) {
	cfg := testConfig(t)
	ctx := testenv.Context(t, 90*time.Second)
	s, err := openShop(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.reset(ctx); err != nil {
		t.Fatal(err)
	}
	sv, err := newService(s, testenv.KafkaBrokers(t), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svcCtx, stop := context.WithCancel(ctx)
	svcErr := make(chan error, 1)
	go func() { svcErr <- sv.Run(svcCtx, ln) }()
	defer func() {
		stop()
		if err := <-svcErr; err != nil {
			t.Errorf("service: %v", err)
		}
	}()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Timeout: 10 * time.Second}

	idle, err := scrape(ctx, client, base)
	if err != nil {
		t.Fatal(err)
	}
	orders := sampleOrders()
	for _, o := range append(orders, orders...) { // every request twice
		if _, _, err := postOrder(ctx, client, base, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.waitSettled(ctx, orders); err != nil {
		t.Fatal(err)
	}
	busy, err := waitMetric(ctx, client, base, func(m metrics) bool {
		return m.sum(metricConsumed, "messaging_consumer_group_name", "receipts") >= 3
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each order: one order.placed and one payment.captured enqueued and
	// relayed, one delivery to billing and one to receipts.
	for _, c := range []struct {
		what          string
		metric        string
		labels        []string
		before, after float64
	}{
		{"order.placed sent to RabbitMQ", metricSent, []string{"messaging_system", "rabbitmq", "messaging_operation_name", "send"}, 0, 3},
		{"payment.captured sent to Kafka", metricSent, []string{"messaging_system", "kafka", "messaging_destination_name", cfg.Topic}, 0, 3},
		{"messages enqueued in the outbox", metricSent, []string{"messaging_system", "outbox"}, 0, 6},
		{"deliveries to billing", metricConsumed, []string{"messaging_system", "rabbitmq", "messaging_consumer_group_name", "billing"}, 0, 3},
		{"deliveries to receipts", metricConsumed, []string{"messaging_system", "kafka", "messaging_consumer_group_name", "receipts"}, 0, 3},
	} {
		if got := idle.sum(c.metric, c.labels...); got != c.before {
			t.Errorf("%s before any order: %s%v = %v, want %v", c.what, c.metric, c.labels, got, c.before)
		}
		// At least: a lost confirm makes a publisher send again.
		if got := busy.sum(c.metric, c.labels...); got < c.after {
			t.Errorf("%s after 3 orders: %s%v = %v, want >= %v", c.what, c.metric, c.labels, got, c.after)
		}
	}
	if got := busy.sum(metricBacklog); got != 0 {
		t.Errorf("%s = %v once every order is settled, want 0", metricBacklog, got)
	}
	if _, ok := busy[metricBacklog]; !ok {
		t.Errorf("no %s gauge", metricBacklog)
	}

	// Deliver the first order.placed again, as a relay that died before
	// marking it dispatched would.
	first, err := s.expected(ctx, orders[0])
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.outbox.Lookup(ctx, destOrders, first.OrderMessageID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != outbox.Dispatched {
		t.Errorf("order.placed of %s is %s, want dispatched", first.Number, rec.State)
	}
	if err := sv.rabbit.Publish(ctx, rec.Message()); err != nil {
		t.Fatal(err)
	}
	dupes := func(m metrics) float64 {
		return m.sum(metricDuplicates, "messaging_system", "rabbitmq", "messaging_consumer_group_name", "billing")
	}
	after, err := waitMetric(ctx, client, base, func(m metrics) bool { return dupes(m) > dupes(busy) })
	if err != nil {
		t.Fatalf("%v; duplicates skipped by billing: %v before the duplicate delivery", err, dupes(busy))
	}
	consumed := func(m metrics) float64 { return m.sum(metricConsumed, "messaging_consumer_group_name", "billing") }
	if consumed(after) <= consumed(busy) {
		t.Errorf("deliveries to billing: %v before the duplicate delivery, %v after", consumed(busy), consumed(after))
	}

	// The duplicate changed nothing: one payment per order.
	c, err := s.counts(ctx, orders)
	if err != nil {
		t.Fatal(err)
	}
	if c != (counts{orders: 3, orderEvents: 3, payments: 3, paymentEvents: 3, receipts: 3}) {
		t.Errorf("stores hold %+v, want 3 of each", c)
	}
	// GET /orders/{id} shows the order paid.
	resp, err := client.Get(base + "/orders/" + first.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"paid"`) || !strings.Contains(string(body), first.PaymentID.String()) {
		t.Errorf("GET /orders/%s: %s %s", first.ID, resp.Status, body)
	}
}

// TestKillAfterCommit runs the service as a separate process and kills it
// with SIGKILL right after an order's transaction commits, before it
// answers; the client retries the request against the restarted service,
// then sends every request again. Each order is stored, billed, relayed and
// receipted once.
func TestKillAfterCommit(t *testing.T) {
	cfg := testConfig(t)
	// A message the killed process was handling waits for its claim's
	// lease to end before the new process takes it.
	cfg.Lease = 2 * time.Second
	ctx := testenv.Context(t, 120*time.Second)
	// Kafka outlives the service processes, as a real cluster would.
	brokers := testenv.KafkaBrokers(t)
	s, err := openShop(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.reset(ctx); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 20 * time.Second}
	orders := sampleOrders()

	// The first process is killed once the second order is committed.
	p1 := startService(t, ctx, cfg, brokers, "-kill-after-commit", "2")
	if res, code, err := postOrder(ctx, client, p1.base, orders[0]); err != nil || code != http.StatusCreated {
		t.Fatalf("POST %s: %d %+v %v", orders[0].Number, code, res, err)
	}
	if res, code, err := postOrder(ctx, client, p1.base, orders[1]); err == nil {
		t.Fatalf("POST %s answered %d %+v; want the process killed before answering", orders[1].Number, code, res)
	}
	if err := p1.wait(); !killed(err) {
		t.Fatalf("service process: %v, want killed by SIGKILL\n%s", err, p1.output())
	}
	if !strings.Contains(p1.output(), "committed, process killed before answering") {
		t.Errorf("the service does not report being killed after the commit:\n%s", p1.output())
	}
	// The order and its event committed together before the kill.
	second, err := s.expected(ctx, orders[1])
	if err != nil {
		t.Fatal(err)
	}
	if d, err := s.fromPostgres(ctx, second.ID); err != nil || d == nil {
		t.Fatalf("order %s of %s after the kill: %v %v", second.Number, second.Customer, d, err)
	}
	rec, err := s.outbox.Lookup(ctx, destOrders, second.OrderMessageID)
	if err != nil {
		t.Fatalf("order.placed of %s after the kill: %v", second.Number, err)
	}
	t.Logf("after the kill, order.placed of %s is %s", second.Number, rec.State)

	// A new process; the client retries, then sends everything again.
	p2 := startService(t, ctx, cfg, brokers)
	for i, o := range []placedOrder{orders[1], orders[2], orders[0], orders[1], orders[2]} {
		want := http.StatusOK
		if i == 1 {
			want = http.StatusCreated
		}
		if res, code, err := postOrder(ctx, client, p2.base, o); err != nil || code != want {
			t.Fatalf("POST %s of %s: %d %+v %v, want %d", o.Number, o.Customer, code, res, err, want)
		}
	}
	if err := s.waitSettled(ctx, orders); err != nil {
		t.Fatalf("%v\n%s", err, p2.output())
	}
	c, err := s.counts(ctx, orders)
	if err != nil {
		t.Fatal(err)
	}
	if c != (counts{orders: 3, orderEvents: 3, payments: 3, paymentEvents: 3, receipts: 3}) {
		t.Errorf("stores hold %+v, want 3 of each", c)
	}
	var out bytes.Buffer
	rep, err := s.check(ctx, orders, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.consistent != 3 {
		t.Errorf("%d of 3 orders consistent:\n%s", rep.consistent, out.String())
	}
	if err := p2.stop(); err != nil {
		t.Errorf("service process: %v\n%s", err, p2.output())
	}
}

// process is the service running as a child process.
type process struct {
	cmd  *exec.Cmd
	base string // http://host:port
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{} // closed once stdout is drained
}

// startService starts "serve" in a child process and waits until it
// listens.
func startService(t *testing.T, ctx context.Context, cfg config, brokers []string, extra ...string) *process {
	t.Helper()
	args := []string{"serve", "-addr", "127.0.0.1:0", "-namespace", cfg.Namespace, "-schema", cfg.Schema,
		"-redis-prefix", cfg.RedisPrefix, "-queue", cfg.Queue, "-topic", cfg.Topic, "-dir", cfg.Dir, "-lease", cfg.Lease.String()}
	cmd := exec.CommandContext(ctx, os.Args[0], append(args, extra...)...)
	// URLs may carry passwords: the environment, not the command line.
	cmd.Env = append(os.Environ(), envAMQP+"="+cfg.AMQPURL, envRedis+"="+cfg.RedisURL, envPostgres+"="+cfg.PostgresURL,
		envKafka+"="+strings.Join(brokers, ","))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		_ = cmd.Wait()
	})
	serving := regexp.MustCompile(`^orders: serving (http://\S+) `)
	ready := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			fmt.Fprintln(&p.out, sc.Text())
			p.mu.Unlock()
			if m := serving.FindStringSubmatch(sc.Text()); m != nil {
				ready <- m[1]
			}
		}
	}()
	select {
	case p.base = <-ready:
	case <-p.done:
		t.Fatalf("the service exited before serving:\n%s", p.output())
	case <-ctx.Done():
		t.Fatalf("the service did not start: %v\n%s", ctx.Err(), p.output())
	}
	return p
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait waits for the process to end by itself.
func (p *process) wait() error {
	<-p.done
	return p.cmd.Wait()
}

// stop ends the process with SIGTERM, as an orchestrator would.
func (p *process) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	return p.wait()
}

func killed(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
