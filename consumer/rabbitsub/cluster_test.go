package rabbitsub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/rabbitsub"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
	"github.com/uuidforge/uuidforge/rabbitmq"
)

// clusterQueue is a queue as rabbitmqctl list_queues shows it.
type clusterQueue struct {
	Name, Type, Leader string
	Members, Online    []string
}

// clusterQueueInfo asks node i of rc about queue name.
func clusterQueueInfo(ctx context.Context, rc *testenv.RabbitNodes, i int, name string) (clusterQueue, error) {
	out, err := rc.Ctl(ctx, i, "list_queues", "name", "type", "members", "leader", "online", "--formatter", "json")
	if err != nil {
		return clusterQueue{}, err
	}
	var qs []clusterQueue
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		return clusterQueue{}, fmt.Errorf("list_queues: %w: %s", err, out)
	}
	for _, q := range qs {
		if q.Name == name {
			return q, nil
		}
	}
	return clusterQueue{}, fmt.Errorf("queue %s not listed", name)
}

// clusterTopology declares a topic exchange and, bound to it with
// "order.*", the quorum queue q with a delivery limit and its quorum
// dead-letter queue "<q>.dead-letter", where both the consumer's dead
// letters and the broker's (after the delivery limit, or a rejection)
// go.
func clusterTopology(exchange, q string) rabbitmq.Topology {
	dlq := q + consumer.DeadLetterSuffix
	return rabbitmq.Topology{
		Exchanges: []rabbitmq.Exchange{{Name: exchange, Kind: amqp.ExchangeTopic}},
		Queues: []rabbitmq.Queue{
			{Name: dlq, Type: rabbitmq.Quorum},
			{Name: q, Type: rabbitmq.Quorum, DeliveryLimit: 5, DeadLetterExchange: "", DeadLetterRoutingKey: dlq},
		},
		Bindings: []rabbitmq.Binding{{Exchange: exchange, Queue: q, Key: "order.*"}},
	}
}

// clusterCleanup deletes the test's exchange and queues when it ends.
func clusterCleanup(t *testing.T, url, exchange string, queues ...string) {
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			for _, q := range queues {
				_, _ = ch.QueueDelete(q, false, false, false)
				_, _ = ch.QueueDelete(q+consumer.DeadLetterSuffix, false, false, false)
			}
			_ = ch.ExchangeDelete(exchange, false, false)
		}
	})
}

// clusterDrain takes every message of q (through url) and returns them.
func clusterDrain(t *testing.T, url, q string) []amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// clusterDepth returns the ready messages of q (through url).
func clusterDepth(t *testing.T, url, q string) int {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	st, err := ch.QueueDeclarePassive(q, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	if err != nil {
		t.Fatal(err)
	}
	return st.Messages
}

// effects counts, per message ID, the handler runs that succeeded (the
// effects) and all handler runs.
type effects struct {
	mu    sync.Mutex
	done  map[uuid.UUID]int
	calls atomic.Int64
}

func (e *effects) add(id uuid.UUID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done == nil {
		e.done = map[uuid.UUID]int{}
	}
	e.done[id]++
}

func (e *effects) count(id uuid.UUID) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.done[id]
}

func (e *effects) distinct() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.done)
}

// runConsumers runs cs until the test ends or stop is called, which waits
// for them to return.
func runConsumers(t *testing.T, cs ...*rabbitsub.Consumer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := c.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func clusterWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterQuorumEndToEnd publishes through rabbitpub to a topic exchange
// of the 3-node cluster, routed to a quorum queue that the topology API
// declares with a member on every node, and consumes with rabbitsub and a
// dedupe store: every message is handled once, messages the handler rejects
// are dead-lettered to the quorum dead-letter queue with their reason, and
// with WithQueueDeadLetterExchange the broker dead-letters them itself
// (x-death) through the queue's dead-letter routing.
func TestClusterQuorumEndToEnd(t *testing.T) {
	rc := testenv.RabbitCluster(t)
	if len(rc.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(rc.Nodes))
	}
	ctx := testenv.Context(t, 2*time.Minute)
	for _, brokerDL := range []bool{false, true} {
		name := "consumer dead letters"
		if brokerDL {
			name = "queue dead-letter exchange"
		}
		t.Run(name, func(t *testing.T) {
			exchange, q := testenv.Name(t, "x"), testenv.Name(t, "qq")
			topo := clusterTopology(exchange, q)
			clusterCleanup(t, rc.URLs[0], exchange, q)
			// The publisher declares the topology on its first node, the
			// consumer reads through another.
			pub, err := rabbitpub.New(rc.URLs[0], forge.MustNew("cluster.example.com"),
				rabbitpub.WithFailoverURLs(rc.URLs[1:]...), rabbitpub.WithExchange(exchange), rabbitpub.WithTopology(topo))
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if err := pub.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			info, err := clusterQueueInfo(ctx, rc, 1, q)
			if err != nil {
				t.Fatal(err)
			}
			if info.Type != "quorum" || !sameMembers(info.Members, rc.Nodes) {
				t.Fatalf("queue %+v: want a quorum queue with a member on each of %v", info, rc.Nodes)
			}

			const n = 200
			var ids, rejected []uuid.UUID
			for i := range n {
				m := publisher.Message{Type: "order.created", Key: []any{q, i}, Body: []byte("ok")}
				if i%20 == 7 {
					m.Body = []byte("reject")
				}
				m.ID = uuid.New()
				if err := pub.Publish(ctx, m); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				if string(m.Body) == "reject" {
					rejected = append(rejected, m.ID)
				} else {
					ids = append(ids, m.ID)
				}
			}

			store, err := dedupe.NewMemory()
			if err != nil {
				t.Fatal(err)
			}
			var eff effects
			h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
				eff.calls.Add(1)
				if string(m.Body) == "reject" {
					return consumer.Permanent(errors.New("rejected by the handler"))
				}
				eff.add(m.ID)
				return nil
			})
			opts := []consumer.Option{consumer.WithDedupe(store, q), rabbitsub.WithTopology(topo),
				rabbitsub.WithFailoverURLs(rc.URLs[2], rc.URLs[0]), consumer.WithLogger(discard())}
			if brokerDL {
				opts = append(opts, rabbitsub.WithQueueDeadLetterExchange())
			}
			c, err := rabbitsub.New(rc.URLs[1], q, h, opts...)
			if err != nil {
				t.Fatal(err)
			}
			stop := runConsumers(t, c)
			dlq := q + consumer.DeadLetterSuffix
			clusterWait(t, time.Minute, "every message handled and every rejected one dead-lettered", func() bool {
				return eff.distinct() == len(ids) && clusterDepth(t, rc.URLs[2], dlq) == len(rejected)
			})
			stop()
			for _, id := range ids {
				if k := eff.count(id); k != 1 {
					t.Errorf("message %s: %d effects", id, k)
				}
			}
			if d := clusterDepth(t, rc.URLs[0], q); d != 0 {
				t.Errorf("%d messages left in the queue", d)
			}
			var got []uuid.UUID
			for _, d := range clusterDrain(t, rc.URLs[2], dlq) {
				dl, err := rabbitsub.ParseDeadLetter(d)
				if err != nil {
					t.Fatal(err)
				}
				id, err := uuid.Parse(dl.Message.MessageId)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, id)
				if dl.Queue != q {
					t.Errorf("dead letter %s: queue %q, want %q", id, dl.Queue, q)
				}
				if !brokerDL && dl.Reason != "rejected by the handler" {
					t.Errorf("dead letter %s: reason %q", id, dl.Reason)
				}
				if brokerDL && d.Headers["x-death"] == nil {
					t.Errorf("dead letter %s: no x-death header from the broker", id)
				}
			}
			slices.SortFunc(got, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
			slices.SortFunc(rejected, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
			if !slices.Equal(got, rejected) {
				t.Errorf("dead letters %v, want the rejected messages %v", got, rejected)
			}
		})
	}
}

func sameMembers(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestClusterNodeOutage stops and starts the node that leads a quorum queue
// of the 3-node cluster while a publisher (connected to that node first,
// with the two others as WithFailoverURLs) publishes and three consumers
// (one starting on each node, with the others as failover URLs), sharing a
// dedupe store, consume: publisher confirms hold — every Publish that
// returned nil is handled —, consumers reconnect to live nodes, every
// message has exactly one effect, and the messages the handler rejects are
// all dead-lettered. One stop/start cycle (about 20 s with the node's
// restart).
func TestClusterNodeOutage(t *testing.T) {
	rc := testenv.RabbitCluster(t)
	if len(rc.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(rc.Nodes))
	}
	ctx := testenv.Context(t, 5*time.Minute)
	exchange, q := testenv.Name(t, "x"), testenv.Name(t, "qq")
	topo := clusterTopology(exchange, q)
	clusterCleanup(t, rc.URLs[0], exchange, q)
	declare, err := rabbitpub.New(rc.URLs[0], forge.MustNew("cluster.example.com"), rabbitpub.WithTopology(topo))
	if err != nil {
		t.Fatal(err)
	}
	if err := declare.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	_ = declare.Close()
	info, err := clusterQueueInfo(ctx, rc, 0, q)
	if err != nil {
		t.Fatal(err)
	}
	down := slices.Index(rc.Nodes, info.Leader)
	if down < 0 || !sameMembers(info.Members, rc.Nodes) {
		t.Fatalf("queue %+v: want a quorum queue on every node of %v", info, rc.Nodes)
	}
	others := func(i int) []string {
		var us []string
		for k := 1; k < len(rc.URLs); k++ {
			us = append(us, rc.URLs[(i+k)%len(rc.URLs)])
		}
		return us
	}

	// Consumers: consumer i starts on node down+i, so the first one is
	// on the node that goes down.
	mem, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	store := &dupCounter{Store: mem}
	var eff effects
	h := consumer.HandlerFunc(func(ctx context.Context, m *consumer.Message) error {
		eff.calls.Add(1)
		time.Sleep(10 * time.Millisecond) // keep deliveries in flight
		if string(m.Body) == "reject" {
			return consumer.Permanent(errors.New("rejected by the handler"))
		}
		eff.add(m.ID)
		return nil
	})
	var dials atomic.Int64
	var cs []*rabbitsub.Consumer
	for i := range 3 {
		node := (down + i) % 3
		c, err := rabbitsub.New(rc.URLs[node], q, h, consumer.WithDedupe(store, q), rabbitsub.WithTopology(topo),
			rabbitsub.WithFailoverURLs(others(node)...), rabbitsub.WithWorkers(4),
			consumer.WithBackoff(50*time.Millisecond, time.Second), consumer.WithLogger(discard()),
			rabbitsub.WithDial(func(next rabbitsub.DialFunc) rabbitsub.DialFunc {
				return func(url string, cfg amqp.Config) (*amqp.Connection, error) {
					dials.Add(1)
					return next(url, cfg)
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	stopConsumers := runConsumers(t, cs...)

	// Publishers: two goroutines, about 100 messages a second each, on
	// the node that goes down first.
	pub, err := rabbitpub.New(rc.URLs[down], forge.MustNew("cluster.example.com"),
		rabbitpub.WithFailoverURLs(others(down)...), rabbitpub.WithExchange(exchange), rabbitpub.WithTopology(topo))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var (
		mu                 sync.Mutex
		confirmed, refused []uuid.UUID
		failed             []error
		published          atomic.Int64
	)
	pctx, stopPublishing := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	for g := range 2 {
		pwg.Go(func() {
			for i := 0; pctx.Err() == nil; i++ {
				m := publisher.Message{Type: "order.created", Key: []any{g, i}, ID: uuid.New(), Body: []byte("ok")}
				if i%50 == 7 {
					m.Body = []byte("reject")
				}
				err := pub.Publish(ctx, m) // not pctx: a publish that started ends
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, err)
				case string(m.Body) == "reject":
					refused = append(refused, m.ID)
				default:
					confirmed = append(confirmed, m.ID)
				}
				mu.Unlock()
				published.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	// burst publishes n messages in one batch, so that the consumers'
	// prefetch windows are full when the node goes down.
	burst := func(n int) {
		t.Helper()
		msgs := make([]publisher.Message, n)
		for i := range msgs {
			msgs[i] = publisher.Message{Type: "order.created", Key: []any{"burst", i}, ID: uuid.New(), Body: []byte("ok")}
		}
		if err := pub.PublishBatch(ctx, msgs...); err != nil {
			t.Fatalf("burst: %v", err)
		}
		mu.Lock()
		for _, m := range msgs {
			confirmed = append(confirmed, m.ID)
		}
		mu.Unlock()
		published.Add(int64(n))
	}
	progress := func(what string, n int64) {
		t.Helper()
		p0, h0 := published.Load(), eff.calls.Load()
		clusterWait(t, time.Minute, what, func() bool { return published.Load() >= p0+n && eff.calls.Load() >= h0+n })
	}
	progress("publishing and consuming before the outage", 200)

	burst(400)
	t0 := time.Now()
	rc.StopNode(t, down)
	stopped := time.Now()
	progress("publishing and consuming with "+rc.Nodes[down]+" down", 200)
	info, err = clusterQueueInfo(ctx, rc, (down+1)%3, q)
	if err != nil {
		t.Fatal(err)
	}
	if info.Leader == rc.Nodes[down] || len(info.Online) != 2 {
		t.Errorf("with %s down: %+v", rc.Nodes[down], info)
	}
	t1 := time.Now()
	rc.StartNode(t, down)
	started := time.Now()
	progress("publishing and consuming with "+rc.Nodes[down]+" back", 200)
	stopPublishing()
	pwg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("%d publishes failed, first: %v", len(failed), failed[0])
	}
	dlq := q + consumer.DeadLetterSuffix
	clusterWait(t, 2*time.Minute, "every confirmed message handled and every rejected one dead-lettered", func() bool {
		return eff.distinct() == len(confirmed) && clusterDepth(t, rc.URLs[down], dlq) >= len(refused)
	})
	stopConsumers()

	twice := 0
	for _, id := range confirmed {
		switch k := eff.count(id); {
		case k == 0:
			t.Errorf("message %s: confirmed, never handled", id)
		case k > 1:
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%d messages had more than one effect", twice)
	}
	if left := clusterDepth(t, rc.URLs[down], q); left != 0 {
		t.Errorf("%d messages left in the queue", left)
	}
	dead := map[string]int{}
	for _, d := range clusterDrain(t, rc.URLs[down], dlq) {
		dead[d.MessageId]++
	}
	dupDead := 0
	for _, id := range refused {
		switch dead[id.String()] {
		case 0:
			t.Errorf("rejected message %s: no dead letter", id)
		case 1:
		default:
			dupDead++
		}
		delete(dead, id.String())
	}
	if len(dead) > 0 {
		t.Errorf("dead letters of messages the handler did not reject: %v", dead)
	}
	t.Logf("%s (queue leader) stopped in %v, down %v, started in %v; %d published (%d confirmed, %d rejected on purpose), "+
		"%d handler runs, %d effects, %d redeliveries answered duplicate, %d consumer dials (3 at the start), %d rejected messages dead-lettered twice",
		rc.Nodes[down], stopped.Sub(t0).Round(100*time.Millisecond), started.Sub(stopped).Round(100*time.Millisecond),
		started.Sub(t1).Round(100*time.Millisecond), published.Load(), len(confirmed), len(refused),
		eff.calls.Load(), eff.distinct(), store.dups.Load(), dials.Load(), dupDead)
}

// dupCounter counts the claims a store answers duplicate: redeliveries of
// messages done already.
type dupCounter struct {
	dedupe.Store
	dups atomic.Int64
}

func (d *dupCounter) Claim(ctx context.Context, k dedupe.Key, lease time.Duration) (dedupe.Claim, error) {
	c, err := d.Store.Claim(ctx, k, lease)
	if err == nil && c.Status == dedupe.Duplicate {
		d.dups.Add(1)
	}
	return c, err
}
