package wmrabbit_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/wmtest"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmrabbit"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// suiteOptions are the options every pub/sub of the suite runs with. The
// consumer's backoff is shortened: the suite nacks hundreds of times and
// reads each message within 15 s, and a nack is redelivered in place after
// the backoff (50 ms to 5 s by default).
func suiteOptions() ([]wmrabbit.Option, []wmrabbit.Option) {
	pub := []wmrabbit.Option{wmrabbit.WithPublisherOptions(
		rabbitpub.WithConfirmTimeout(5*time.Second),
		publisher.WithBackoff(20*time.Millisecond, 500*time.Millisecond))}
	sub := []wmrabbit.Option{wmrabbit.WithLogger(quiet), wmrabbit.WithConsumerOptions(
		consumer.WithLogger(quiet),
		consumer.WithBackoff(5*time.Millisecond, 100*time.Millisecond),
		consumer.WithShutdownTimeout(5*time.Second))}
	return pub, sub
}

func newPubSub(t *testing.T, url string, pubOpts, subOpts []wmrabbit.Option) (message.Publisher, message.Subscriber) {
	t.Helper()
	gen := forge.MustNew("watermill.suite.example")
	p, err := wmrabbit.NewPublisher(url, gen, pubOpts...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := wmrabbit.NewSubscriber(url, subOpts...)
	if err != nil {
		t.Fatal(err)
	}
	return p, s
}

// TestPubSubQueuePerTopic runs Watermill's universal Pub/Sub suite against
// the adapter with its default topology (a durable queue per topic) and no
// deduplication.
//
// Features: no consumer groups (every subscriber of a topic shares its
// queue); order is not guaranteed (several workers and in-place
// redelivery of nacked messages); delivery is at least once; messages are
// persistent (durable queues, persistent messages). Reconnect: the
// broker closes every connection of the test's own user twice while 10 000
// messages are published and consumed (rabbitmqctl
// close_all_user_connections, the way this repository kills connections
// without touching other tests; the shared broker is not restarted) — in
// wmtest.Reconnect, the suite's TestReconnect scenario without the data race
// that makes the suite's own fail.
func TestPubSubQueuePerTopic(t *testing.T) {
	url, kill := wmtest.RabbitUser(t, wmtest.AMQPURL(t))
	pubOpts, subOpts := suiteOptions()
	features := tests.Features{
		ConsumerGroups:        false,
		ExactlyOnceDelivery:   false,
		GuaranteedOrder:       false,
		Persistent:            true,
		RestartServiceCommand: nil, // see wmtest.Reconnect, run below
		ForceShort:            testing.Short(),
	}
	newPS := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, url, pubOpts, subOpts)
	}
	tests.TestPubSub(t, features, newPS, nil)
	t.Run("Reconnect", func(t *testing.T) { wmtest.Reconnect(t, newPS, wmtest.Command(kill), false) })
}

// TestPubSubGroupsWithDedupe runs the suite with consumer groups (a direct
// exchange, a queue per topic and group) and deduplication in the consumer
// loop with one memory store shared by every subscriber of the run (as a
// Redis or PostgreSQL store is shared by processes).
//
// Features: consumer groups; exactly-once delivery to Watermill — each
// message ID reaches the handlers of one group once, however often the
// broker delivers it (nacked messages are released and delivered again;
// the suite reads without deduplicating and fails on any second copy);
// persistent. Declaring exactly-once makes the suite skip the two tests
// it does not support for such Pub/Subs (TestContinueAfterSubscribeClose
// and TestConcurrentClose), which the queue-per-topic run covers.
func TestPubSubGroupsWithDedupe(t *testing.T) {
	url, kill := wmtest.RabbitUser(t, wmtest.AMQPURL(t))
	store, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	exchange := wmtest.Name(t, "wmx")
	pubOpts, subOpts := suiteOptions()
	pubOpts = append(pubOpts, wmrabbit.WithExchange(exchange))
	subOpts = append(subOpts, wmrabbit.WithExchange(exchange), wmrabbit.WithDedupe(store))
	features := tests.Features{
		ConsumerGroups:        true,
		ExactlyOnceDelivery:   true,
		GuaranteedOrder:       false,
		Persistent:            true,
		RestartServiceCommand: nil, // see wmtest.Reconnect, run below
		ForceShort:            true,
	}
	group := wmtest.Name(t, "g")
	newPS := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, url, pubOpts, append(subOpts, wmrabbit.WithGroup(group)))
	}
	tests.TestPubSub(t, features, newPS,
		func(t *testing.T, g string) (message.Publisher, message.Subscriber) {
			return newPubSub(t, url, pubOpts, append(subOpts, wmrabbit.WithGroup(g)))
		})
	t.Run("Reconnect", func(t *testing.T) { wmtest.Reconnect(t, newPS, wmtest.Command(kill), true) })
}
