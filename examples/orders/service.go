package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/pgstore"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/otelforge"
	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// service is the shop's back end in one process: the HTTP API, the outbox
// relay, the billing consumer and the receipts consumer, with their
// metrics. In a larger shop each would be a process of its own; they share
// nothing but the stores and the brokers. Safe for concurrent use.
type service struct {
	*shop
	log     *slog.Logger
	brokers []string

	// ordersOut and paymentsOut enqueue into the outbox, inside the
	// caller's transaction.
	ordersOut, paymentsOut *pgoutbox.Publisher
	// rabbit and kafka are the relay's publishers: order.placed to the
	// billing queue, payment.captured to the payments topic.
	rabbit *rabbitpub.Publisher
	kafka  *kafkapub.Publisher
	relay  *outbox.Relay

	billing  *rabbitsub.Consumer // order.placed → payment row + payment.captured, in the inbox
	receipts *kafkasub.Consumer  // payment.captured → Redis entry + file

	metrics *prometheus.Registry
	meters  *sdkmetric.MeterProvider
	backlog metric.Registration

	commits atomic.Int64 // orders committed by this process
}

// newService builds the service on the shop's stores and the Kafka cluster
// at brokers. It does no I/O.
func newService(s *shop, brokers []string, stderr io.Writer) (sv *service, err error) {
	sv = &service{shop: s, brokers: brokers,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	defer func() {
		if err != nil {
			sv.Close()
		}
	}()

	// Metrics: the OpenTelemetry observers record into a meter provider
	// whose reader is the Prometheus exporter; GET /metrics serves its
	// registry.
	sv.metrics = prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(sv.metrics), otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	sv.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	mp := otelforge.WithMeterProvider(sv.meters)
	pubObs, err := otelforge.NewPublisherObserver(mp)
	if err != nil {
		return nil, err
	}
	billingObs, err := otelforge.NewConsumerObserver("billing", mp)
	if err != nil {
		return nil, err
	}
	receiptsObs, err := otelforge.NewConsumerObserver("receipts", mp)
	if err != nil {
		return nil, err
	}
	if sv.backlog, err = otelforge.ObserveOutbox(sv.backlogTotal, mp); err != nil {
		return nil, err
	}

	gen := s.ids.messages
	if sv.ordersOut, err = pgoutbox.NewPublisher(s.outbox, destOrders, gen, publisher.WithObserver(pubObs)); err != nil {
		return nil, err
	}
	if sv.paymentsOut, err = pgoutbox.NewPublisher(s.outbox, destPayments, gen, publisher.WithObserver(pubObs)); err != nil {
		return nil, err
	}

	// Both RabbitMQ sides declare the billing queue on every connect.
	topo := rabbitmq.Topology{Queues: []rabbitmq.Queue{{Name: s.cfg.Queue}}}
	if sv.rabbit, err = rabbitpub.New(s.cfg.AMQPURL, gen, rabbitpub.WithQueue(s.cfg.Queue), rabbitpub.WithTopology(topo),
		rabbitpub.WithContentType("application/json"), publisher.WithObserver(pubObs)); err != nil {
		return nil, err
	}
	if sv.kafka, err = kafkapub.New(brokers, s.cfg.Topic, gen, publisher.WithObserver(pubObs)); err != nil {
		return nil, err
	}
	if sv.relay, err = outbox.NewRelay(s.outbox, map[string]publisher.Publisher{destOrders: sv.rabbit, destPayments: sv.kafka},
		outbox.WithLogger(sv.log)); err != nil {
		return nil, err
	}

	// A consumer's claim on a message lasts for the lease: the message of
	// a consumer that died waits that long before another one takes it. A
	// handler call gets half of it.
	lease := s.cfg.Lease
	if lease <= 0 {
		lease = dedupe.DefaultLease
	}
	// Billing deduplicates with the PostgreSQL inbox: its handler runs in
	// the transaction that records the message as done, and what it
	// publishes through the outbox publisher is stored in that transaction.
	if sv.billing, err = rabbitsub.New(s.cfg.AMQPURL, s.cfg.Queue, consumer.HandlerFunc(sv.bill),
		consumer.WithDedupe(s.inbox, "billing"),
		consumer.WithLease(lease),
		consumer.WithTimeout(lease/2),
		consumer.WithBackoff(20*time.Millisecond, time.Second),
		consumer.WithObserver(billingObs),
		consumer.WithLogger(sv.log),
		rabbitsub.WithTopology(topo)); err != nil {
		return nil, err
	}
	// Receipts deduplicate in Redis: their effects (a Redis entry and a
	// file named after the order ID) are rewritten identically by a retry.
	receiptStore, err := redisstore.New(s.rdb, redisstore.WithPrefix(s.cfg.RedisPrefix+"dedupe:"))
	if err != nil {
		return nil, err
	}
	if sv.receipts, err = kafkasub.New(brokers, s.cfg.Topic, "receipts", consumer.HandlerFunc(sv.writeReceipt),
		consumer.WithDedupe(receiptStore, "receipts"),
		consumer.WithLease(lease),
		consumer.WithTimeout(lease/2),
		consumer.WithObserver(receiptsObs),
		consumer.WithLogger(sv.log),
		kafkasub.WithPartitionParallelism(3)); err != nil {
		return nil, err
	}
	return sv, nil
}

// Close releases the publishers and the metrics; the consumers and the
// relay stop with Run's context.
func (sv *service) Close() {
	if sv.rabbit != nil {
		_ = sv.rabbit.Close()
	}
	if sv.kafka != nil {
		_ = sv.kafka.Close()
	}
	if sv.backlog != nil {
		_ = sv.backlog.Unregister()
	}
	if sv.meters != nil {
		_ = sv.meters.Shutdown(context.Background())
	}
}

// Run serves HTTP on ln and runs the relay and the consumers until ctx ends
// or one of them fails.
func (sv *service) Run(ctx context.Context, ln net.Listener) error {
	if err := createTopic(ctx, sv.brokers, sv.cfg.Topic); err != nil {
		ln.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{Handler: sv.handler(), ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	parts := []struct {
		name string
		run  func(context.Context) error
	}{
		{"http", func(ctx context.Context) error {
			go func() {
				<-ctx.Done()
				shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
				defer done()
				_ = srv.Shutdown(shutdown)
			}()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}},
		{"relay", sv.relay.Run},
		{"billing", sv.billing.Run},
		{"receipts", sv.receipts.Run},
	}
	errs := make(chan error, len(parts))
	for _, p := range parts {
		go func() {
			err := p.run(ctx)
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: %w", p.name, err)
			} else {
				err = nil
			}
			cancel() // one part stopping stops them all
			errs <- err
		}()
	}
	var first error
	for range parts {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (sv *service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", sv.placeOrder)
	mux.HandleFunc("GET /orders/{id}", sv.getOrder)
	mux.Handle("GET /metrics", promhttp.HandlerFor(sv.metrics, promhttp.HandlerOpts{}))
	return mux
}

// placeResponse is the answer to POST /orders.
type placeResponse struct {
	OrderID    uuid.UUID `json:"order_id"`
	UserID     uuid.UUID `json:"user_id"`
	TotalCents int       `json:"total_cents"`
	Status     string    `json:"status"` // "placed" (201 Created) or "already placed" (200 OK)
}

// placeOrder stores the order and enqueues order.placed in one
// transaction: the event exists if and only if the order does. A retried
// request finds the order (its ID comes from the customer and the order
// number) and stores nothing; the outbox would not store the event twice
// either, since its message ID comes from the same business key.
func (sv *service) placeOrder(w http.ResponseWriter, r *http.Request) {
	var o placedOrder
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&o); err != nil {
		http.Error(w, "orders: decode the order: "+err.Error(), http.StatusBadRequest)
		return
	}
	d, err := sv.ids.doc(o)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	msg, err := orderPlaced(d)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	created := false
	err = pgx.BeginFunc(ctx, sv.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "INSERT INTO "+sv.table("orders")+" (id, user_id, customer, number, total_cents) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
			d.ID, d.UserID, d.Customer, d.Number, d.TotalCents)
		if err != nil || tag.RowsAffected() == 0 {
			return err // placed before: a retried request
		}
		created = true
		for _, it := range d.Items {
			if _, err := tx.Exec(ctx, "INSERT INTO "+sv.table("order_items")+" (order_id, product_id, sku, quantity, cents) VALUES ($1, $2, $3, $4, $5)",
				d.ID, it.ProductID, it.SKU, it.Quantity, it.Cents); err != nil {
				return err
			}
		}
		return sv.ordersOut.Publish(pgoutbox.NewContext(ctx, tx), msg)
	})
	if err != nil {
		sv.log.Warn("orders: place order", "order", d.ID, "err", err)
		http.Error(w, "orders: the order was not stored; try again", http.StatusServiceUnavailable)
		return
	}
	if created {
		if n := sv.commits.Add(1); sv.cfg.KillAfterCommit > 0 && n == int64(sv.cfg.KillAfterCommit) {
			// The order and its event are committed; nothing is answered
			// and the relay may not have published the event yet.
			fmt.Printf("orders: order %s of %s committed, process killed before answering\n", d.Number, d.Customer)
			kill()
		}
	}
	res, code := placeResponse{OrderID: d.ID, UserID: d.UserID, TotalCents: d.TotalCents, Status: "placed"}, http.StatusCreated
	if !created {
		res.Status, code = "already placed", http.StatusOK
	}
	w.Header().Set("Location", "/orders/"+d.ID.String())
	writeJSON(w, code, res)
}

// orderStatus is the answer to GET /orders/{id}.
type orderStatus struct {
	orderDoc
	Status    string     `json:"status"` // "placed" or "paid"
	PaymentID *uuid.UUID `json:"payment_id,omitempty"`
}

func (sv *service) getOrder(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		http.Error(w, "orders: not an order ID", http.StatusBadRequest)
		return
	}
	d, err := sv.fromPostgres(r.Context(), id)
	switch {
	case err != nil:
		sv.log.Warn("orders: read order", "order", id, "err", err)
		http.Error(w, "orders: try again", http.StatusServiceUnavailable)
	case d == nil:
		http.Error(w, "orders: no such order", http.StatusNotFound)
	default:
		res := orderStatus{orderDoc: d.orderDoc, Status: d.status}
		if d.PaymentID != uuid.Nil {
			res.PaymentID = &d.PaymentID
		}
		writeJSON(w, http.StatusOK, res)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// bill handles order.placed inside the inbox's transaction: it marks the
// order paid, records the payment and enqueues payment.captured. The three
// writes and the message's dedupe record commit together, or none does.
func (sv *service) bill(ctx context.Context, m *consumer.Message) error {
	var d orderDoc
	if err := json.Unmarshal(m.Body, &d); err != nil || d.ID == uuid.Nil {
		return consumer.Permanent(fmt.Errorf("billing: decode order.placed %s: %v", m.ID, err))
	}
	tx, ok := pgstore.TxFromContext(ctx)
	if !ok {
		return errors.New("billing: no inbox transaction in the context")
	}
	tag, err := tx.Exec(ctx, "UPDATE "+sv.table("orders")+" SET status = 'paid' WHERE id = $1 AND status = 'placed'", d.ID)
	if err != nil {
		return fmt.Errorf("billing: order %s: %w", d.ID, err)
	}
	if tag.RowsAffected() != 1 {
		return consumer.Permanent(fmt.Errorf("billing: order %s is not waiting for payment", d.ID))
	}
	pid, err := sv.ids.paymentID(d.ID)
	if err != nil {
		return consumer.Permanent(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+sv.table("payments")+" (id, order_id, cents, message_id) VALUES ($1, $2, $3, $4)",
		pid, d.ID, d.TotalCents, m.ID); err != nil {
		return fmt.Errorf("billing: payment of order %s: %w", d.ID, err)
	}
	ev, err := paymentCaptured(receipt{orderDoc: d, PaymentID: pid})
	if err != nil {
		return consumer.Permanent(err)
	}
	// ctx carries the inbox's transaction, where the outbox publisher
	// stores the event, and the lineage of m, from which its ID is derived.
	return sv.paymentsOut.Publish(ctx, ev)
}

// writeReceipt handles payment.captured: it writes the receipt to Redis
// and to the file store, both under the order ID, with the IDs of the two
// messages it came through.
func (sv *service) writeReceipt(ctx context.Context, m *consumer.Message) error {
	var r receipt
	if err := json.Unmarshal(m.Body, &r); err != nil || r.ID == uuid.Nil {
		return consumer.Permanent(fmt.Errorf("receipts: decode payment.captured %s: %v", m.ID, err))
	}
	r.OrderMessageID, r.PaymentMessageID = m.CausationID, m.ID
	doc, err := json.Marshal(r)
	if err != nil {
		return consumer.Permanent(err)
	}
	if err := sv.rdb.Set(ctx, sv.cacheKey(r.ID), doc, sv.cfg.CacheTTL).Err(); err != nil {
		return fmt.Errorf("receipts: redis: set %s: %w", sv.cacheKey(r.ID), err)
	}
	return writeFile(sv.filePath(r.ID), doc)
}

// backlogTotal is the outbox backlog over its destinations, for the
// uuidforge.outbox.backlog and oldest_age gauges.
func (sv *service) backlogTotal(ctx context.Context) (int64, time.Duration, error) {
	bl, err := sv.outbox.Backlog(ctx)
	if err != nil {
		return 0, 0, err
	}
	var n int64
	var oldest time.Duration
	for _, b := range bl {
		n += b.Pending
		oldest = max(oldest, b.Age)
	}
	return n, oldest, nil
}

// kill ends the process the hard way, as a crash or kill -9 would: no
// deferred function runs, nothing is answered, no connection is closed
// cleanly.
func kill() {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill()
	}
	time.Sleep(time.Second)
	os.Exit(137) // only if the signal did not end the process
}
