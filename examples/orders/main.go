package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is what one run uses.
type config struct {
	AMQPURL, RedisURL, PostgresURL string
	Namespace                      string        // the shop's namespace; entity namespaces derive from it
	Schema                         string        // PostgreSQL schema of the orders, the inbox and the outbox
	RedisPrefix                    string        // prefix of every Redis key the shop writes
	Queue                          string        // RabbitMQ queue of order.placed (billing)
	Topic                          string        // Kafka topic of payment.captured (receipts)
	Dir                            string        // root of the file store
	CacheTTL                       time.Duration // lifetime of the Redis entries
	Lease                          time.Duration // the consumers' dedupe lease; 0 means the stores' default
	Addr                           string        // serve: the HTTP listen address
	KillAfterCommit                int           // serve: SIGKILL the process right after the n-th order commits (0: never)
	Timeout                        time.Duration // demo: bound on the whole run
	Stderr                         io.Writer     // warnings of the service's components; nil means os.Stderr
}

// flags declares the flags of both modes on fs.
func flags(fs *flag.FlagSet, cfg *config) {
	fs.StringVar(&cfg.AMQPURL, "amqp", env(envAMQP, defaultAMQP), "RabbitMQ URL (default: $AMQP_URL or a local server)")
	fs.StringVar(&cfg.RedisURL, "redis", env(envRedis, defaultRedis), "Redis URL (default: $REDIS_URL or a local server)")
	fs.StringVar(&cfg.PostgresURL, "postgres", env(envPostgres, defaultPostgres), "PostgreSQL URL (default: $POSTGRES_URL or a local server)")
	fs.StringVar(&cfg.Namespace, "namespace", "shop.example.com", "namespace of the shop's IDs")
	fs.StringVar(&cfg.Schema, "schema", "uuidforge_orders_example", "PostgreSQL schema of the shop's tables")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", "uuidforge:orders-example:", "prefix of the shop's Redis keys")
	fs.StringVar(&cfg.Queue, "queue", "uuidforge.orders.example.billing", "RabbitMQ queue of order.placed")
	fs.StringVar(&cfg.Topic, "topic", "uuidforge-orders-example-payments", "Kafka topic of payment.captured")
	fs.StringVar(&cfg.Dir, "dir", "", "root directory of the receipt files (default: a new temporary directory for the demo, the user's cache directory for serve)")
	fs.DurationVar(&cfg.CacheTTL, "cache-ttl", time.Hour, "lifetime of the Redis receipts")
	fs.DurationVar(&cfg.Lease, "lease", 30*time.Second, "how long a consumer's claim on a message lasts: a killed consumer's messages wait this long (a handler call gets half of it)")
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serveMain(os.Args[2:]))
	}
	cfg := config{}
	flags(flag.CommandLine, &cfg)
	flag.DurationVar(&cfg.Timeout, "timeout", time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// serveMain is "orders serve": the service alone, until SIGINT or SIGTERM.
// It returns the process's exit code.
func serveMain(args []string) int {
	cfg := config{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	flags(fs, &cfg)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "HTTP listen address")
	fs.IntVar(&cfg.KillAfterCommit, "kill-after-commit", 0, "kill the process with SIGKILL right after the n-th order is committed, before answering (a crash to recover from)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.Dir == "" {
		// The same directory on every start, so that a restarted service
		// finds the receipts it wrote.
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		cfg.Dir = filepath.Join(base, "uuidforge-orders-example", "receipts")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		return 1
	}
	return 0
}

// serve runs the service on its stores as they are (creating what is
// missing) until ctx ends.
func serve(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	s, err := openShop(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.migrate(ctx); err != nil {
		return err
	}
	brokers, inProcess, stopKafka, err := startKafka()
	if err != nil {
		return err
	}
	defer stopKafka()
	sv, err := newService(s, brokers, cfg.Stderr)
	if err != nil {
		return err
	}
	defer sv.Close()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "orders: serving http://%s (POST /orders, GET /orders/{id}, GET /metrics); %s\n", ln.Addr(), describe(cfg, brokers, inProcess))
	return sv.Run(ctx, ln)
}

func describe(cfg config, brokers []string, inProcess bool) string {
	kafka := "Kafka"
	if inProcess {
		kafka = "in-process Kafka"
	}
	return fmt.Sprintf("PostgreSQL schema %s, Redis %s (keys %s*), files under %s, RabbitMQ %s (queue %s), %s %s (topic %s)",
		cfg.Schema, redact(cfg.RedisURL), cfg.RedisPrefix, cfg.Dir, redact(cfg.AMQPURL), cfg.Queue, kafka, strings.Join(brokers, ","), cfg.Topic)
}

// run is the demo: it empties the shop's stores, starts the service, places
// the sample orders over HTTP (the first one twice), waits until every
// order is paid and has its receipt, delivers one order.placed again, then
// checks every store and the metrics.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "uuidforge-orders-")
		if err != nil {
			return err
		}
		cfg.Dir = dir
	}
	s, err := openShop(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.reset(ctx); err != nil {
		return err
	}
	brokers, inProcess, stopKafka, err := startKafka()
	if err != nil {
		return err
	}
	defer stopKafka()
	sv, err := newService(s, brokers, cfg.Stderr)
	if err != nil {
		return err
	}
	defer sv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "stores and brokers: %s\n", describe(cfg, brokers, inProcess))
	// The demo stops waiting if the service fails.
	ctx, failed := context.WithCancelCause(ctx)
	defer failed(nil)
	svcCtx, stopService := context.WithCancel(ctx)
	svcErr := make(chan error, 1)
	go func() {
		err := sv.Run(svcCtx, ln)
		if err != nil {
			failed(fmt.Errorf("service: %w", err))
		}
		svcErr <- err
	}()
	defer func() {
		stopService()
		<-svcErr
	}()
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "service: %s\n", base)
	client := &http.Client{Timeout: 10 * time.Second}

	// Place the orders, then the first one again, as a client whose first
	// request timed out would.
	orders := sampleOrders()
	requests := append(orders[:len(orders):len(orders)], orders[0])
	for i, o := range requests {
		res, code, err := postOrder(ctx, client, base, o)
		if err != nil {
			return err
		}
		again := ""
		if i >= len(orders) {
			again = " again (a retried request)"
		}
		fmt.Fprintf(out, "POST /orders %s of %s%s: %d %s, order %s %s\n", o.Number, email(o.Customer), again, code, http.StatusText(code), res.OrderID, res.Status)
	}

	if err := s.waitSettled(ctx, orders); err != nil {
		return err
	}
	fmt.Fprintln(out, "every order paid, its payment.captured relayed to Kafka and its receipt written")

	// A duplicate delivery: the first order's order.placed published again
	// with its stored IDs, as a relay that died after the broker confirmed
	// it and before marking it dispatched would. Billing skips it.
	first, err := s.expected(ctx, orders[0])
	if err != nil {
		return err
	}
	rec, err := s.outbox.Lookup(ctx, destOrders, first.OrderMessageID)
	if err != nil {
		return err
	}
	if err := sv.rabbit.Publish(ctx, rec.Message()); err != nil {
		return err
	}
	fmt.Fprintf(out, "order.placed of %s of %s published again with its stored ID %s, as a relay that died before marking it dispatched would\n",
		first.Number, first.Customer, first.OrderMessageID)
	m, err := waitMetric(ctx, client, base, func(m metrics) bool { return m.sum(metricDuplicates, "messaging_consumer_group_name", "billing") >= 1 })
	if err != nil {
		return err
	}

	rep, err := s.check(ctx, orders, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "consistency: orders=%d consistent=%d mismatches=%d\n", rep.orders, rep.consistent, len(rep.mismatches))
	fmt.Fprintf(out, "metrics (GET /metrics): sent rabbitmq=%v kafka=%v outbox=%v; consumed billing=%v receipts=%v; duplicates skipped billing=%v receipts=%v; outbox backlog=%v\n",
		m.sum(metricSent, "messaging_system", "rabbitmq"), m.sum(metricSent, "messaging_system", "kafka"), m.sum(metricSent, "messaging_system", "outbox"),
		m.sum(metricConsumed, "messaging_consumer_group_name", "billing"), m.sum(metricConsumed, "messaging_consumer_group_name", "receipts"),
		m.sum(metricDuplicates, "messaging_consumer_group_name", "billing"), m.sum(metricDuplicates, "messaging_consumer_group_name", "receipts"),
		m.sum(metricBacklog))

	c, err := s.counts(ctx, orders)
	if err != nil {
		return err
	}
	duplicates := m.sum(metricDuplicates)
	fmt.Fprintf(out, "orders: requests=%d orders=%d order_events=%d payments=%d payment_events=%d receipts=%d duplicates_skipped=%v consistent=%d mismatches=%d\n",
		len(requests), c.orders, c.orderEvents, c.payments, c.paymentEvents, c.receipts, duplicates, rep.consistent, len(rep.mismatches))
	if len(rep.mismatches) > 0 {
		return fmt.Errorf("%d mismatches between the stores", len(rep.mismatches))
	}
	if n := len(orders); c.orders != n || c.orderEvents != n || c.payments != n || c.paymentEvents != n || c.receipts != n {
		return fmt.Errorf("not once per order: %d orders stored, %d order.placed, %d payments, %d payment.captured, %d receipts for %d orders",
			c.orders, c.orderEvents, c.payments, c.paymentEvents, c.receipts, n)
	}
	return nil
}

// postOrder sends o to POST /orders.
func postOrder(ctx context.Context, client *http.Client, base string, o placedOrder) (placeResponse, int, error) {
	body, err := json.Marshal(o)
	if err != nil {
		return placeResponse{}, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/orders", bytes.NewReader(body))
	if err != nil {
		return placeResponse{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return placeResponse{}, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return placeResponse{}, resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return placeResponse{}, resp.StatusCode, fmt.Errorf("POST /orders %s of %s: %s: %s", o.Number, o.Customer, resp.Status, strings.TrimSpace(string(b)))
	}
	var res placeResponse
	if err := json.Unmarshal(b, &res); err != nil {
		return placeResponse{}, resp.StatusCode, fmt.Errorf("POST /orders: %w", err)
	}
	return res, resp.StatusCode, nil
}

// waitSettled waits until every order is paid, its receipt is in Redis
// and in the file store, and the outbox holds nothing pending.
func (s *shop) waitSettled(ctx context.Context, orders []placedOrder) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		done, what, err := s.settled(ctx, orders)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-t.C:
		}
	}
}

func (s *shop) settled(ctx context.Context, orders []placedOrder) (done bool, waitingFor string, err error) {
	for _, o := range orders {
		d, err := s.ids.doc(o)
		if err != nil {
			return false, "", err
		}
		pg, err := s.fromPostgres(ctx, d.ID)
		if err != nil {
			return false, "", err
		}
		if pg == nil || pg.status != "paid" {
			return false, fmt.Sprintf("the payment of %s of %s", d.Number, d.Customer), nil
		}
		if n, err := s.rdb.Exists(ctx, s.cacheKey(d.ID)).Result(); err != nil || n == 0 {
			return false, fmt.Sprintf("the receipt of %s of %s in Redis", d.Number, d.Customer), err
		}
		if _, err := os.Stat(s.filePath(d.ID)); err != nil {
			return false, fmt.Sprintf("the receipt file of %s of %s", d.Number, d.Customer), nil
		}
	}
	backlog, err := s.outbox.Backlog(ctx)
	if err != nil {
		return false, "", err
	}
	for _, b := range backlog {
		if b.Pending > 0 {
			return false, fmt.Sprintf("%d outbox records of %s", b.Pending, b.Destination), nil
		}
	}
	return true, "", nil
}

type counts struct{ orders, orderEvents, payments, paymentEvents, receipts int }

// counts counts what the stores hold: orders, payments and the outbox's
// records of each destination in PostgreSQL, and the receipts of orders
// found both in Redis and in the file store.
func (s *shop) counts(ctx context.Context, orders []placedOrder) (counts, error) {
	var c counts
	err := s.pool.QueryRow(ctx, fmt.Sprintf(`SELECT
	(SELECT count(*) FROM %s),
	(SELECT count(*) FROM %s WHERE destination = $1),
	(SELECT count(*) FROM %s),
	(SELECT count(*) FROM %s WHERE destination = $2)`, s.table("orders"), s.outbox.Table(), s.table("payments"), s.outbox.Table()),
		destOrders, destPayments).Scan(&c.orders, &c.orderEvents, &c.payments, &c.paymentEvents)
	if err != nil {
		return counts{}, fmt.Errorf("postgres: count: %w", err)
	}
	for _, o := range orders {
		d, err := s.ids.doc(o)
		if err != nil {
			return counts{}, err
		}
		cached, err := s.fromRedis(ctx, d.ID)
		if err != nil {
			return counts{}, err
		}
		file, err := s.fromFile(d.ID)
		if err != nil {
			return counts{}, err
		}
		if cached != nil && file != nil {
			c.receipts++
		}
	}
	return c, nil
}

// The Prometheus names of the metrics the demo reads (see package
// otelforge for all of them).
const (
	metricSent       = "messaging_client_sent_messages_total"
	metricConsumed   = "messaging_client_consumed_messages_total"
	metricDuplicates = "uuidforge_consumer_duplicates_total"
	metricBacklog    = "uuidforge_outbox_backlog"
)

// metrics is a scrape of GET /metrics: the samples of the Prometheus text
// format, by metric name.
type metrics map[string][]sample

type sample struct {
	labels map[string]string
	value  float64
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

func parseMetrics(text string) metrics {
	m := metrics{}
	for _, line := range strings.Split(text, "\n") {
		p := sampleLine.FindStringSubmatch(line)
		if p == nil {
			continue
		}
		v, err := strconv.ParseFloat(p[3], 64)
		if err != nil {
			continue
		}
		s := sample{labels: map[string]string{}, value: v}
		for _, l := range labelPair.FindAllStringSubmatch(p[2], -1) {
			// Label values escape '\\', '"' and newlines as Go strings do.
			if v, err := strconv.Unquote(`"` + l[2] + `"`); err == nil {
				s.labels[l[1]] = v
			} else {
				s.labels[l[1]] = l[2]
			}
		}
		m[p[1]] = append(m[p[1]], s)
	}
	return m
}

// sum adds up the samples of name whose labels have the given values
// (label, value, label, value, ...).
func (m metrics) sum(name string, labels ...string) float64 {
	var total float64
next:
	for _, s := range m[name] {
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// scrape reads GET /metrics.
func scrape(ctx context.Context, client *http.Client, base string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(string(b)), nil
}

// waitMetric scrapes GET /metrics until ok holds.
func waitMetric(ctx context.Context, client *http.Client, base string, ok func(metrics) bool) (metrics, error) {
	for {
		m, err := scrape(ctx, client, base)
		if err != nil {
			return nil, err
		}
		if ok(m) {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the metrics: %w", context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
