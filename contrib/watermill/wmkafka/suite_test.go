package wmkafka_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/contrib/watermill/internal/wmtest"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmkafka"
	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// suiteOptions are the options every pub/sub of the suite runs with. The
// consumer's backoff is shortened: the suite nacks hundreds of times and
// reads each message within 15 s, and a nack is redelivered in place after
// the backoff (50 ms to 5 s by default). Sessions are short so that the
// members the suite closes leave the group quickly.
func suiteOptions() ([]wmkafka.Option, []wmkafka.Option) {
	pub := []wmkafka.Option{wmkafka.WithPublisherOptions(
		kafkapub.WithAutoTopicCreation(),
		kafkapub.WithWriteTimeout(5*time.Second),
		publisher.WithBackoff(20*time.Millisecond, 500*time.Millisecond))}
	sub := []wmkafka.Option{wmkafka.WithLogger(quiet), wmkafka.WithConsumerOptions(
		consumer.WithLogger(quiet),
		consumer.WithBackoff(5*time.Millisecond, 100*time.Millisecond),
		consumer.WithShutdownTimeout(5*time.Second),
		kafkasub.WithSessionTimeout(2*time.Second))}
	return pub, sub
}

func newPubSub(t *testing.T, brokers []string, group string, pubOpts, subOpts []wmkafka.Option) (message.Publisher, message.Subscriber) {
	t.Helper()
	gen := forge.MustNew("watermill.suite.example")
	p, err := wmkafka.NewPublisher(brokers, gen, pubOpts...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := wmkafka.NewSubscriber(brokers, group, subOpts...)
	if err != nil {
		t.Fatal(err)
	}
	return p, s
}

// TestPubSub runs Watermill's universal Pub/Sub suite against the Kafka
// adapter on the in-process broker (kfake), without deduplication.
//
// Features: consumer groups (every subscriber is a group member; the
// non-group tests share one group); order is not guaranteed (messages
// without a key are spread over partitions, and the suite's order test
// keys nothing); at least once; persistent. New subscribers do not receive
// old messages: a subscriber is a group member and resumes at the group's
// committed offset. Reconnect: the broker is stopped and started again on
// the same port with the same data directory, twice, while 10 000 messages
// are published and consumed — in wmtest.Reconnect, the suite's
// TestReconnect scenario without the data race that makes the suite's own
// fail.
func TestPubSub(t *testing.T) {
	k := wmtest.StartKafka(t)
	pubOpts, subOpts := suiteOptions()
	features := tests.Features{
		ConsumerGroups:        true,
		ExactlyOnceDelivery:   false,
		GuaranteedOrder:       false,
		Persistent:            true,
		RestartServiceCommand: nil, // see wmtest.Reconnect, run below
		ForceShort:            testing.Short(),
	}
	group := wmtest.Name(t, "g")
	newPS := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, k.Brokers(), group, pubOpts, subOpts)
	}
	tests.TestPubSub(t, features, newPS,
		func(t *testing.T, g string) (message.Publisher, message.Subscriber) {
			return newPubSub(t, k.Brokers(), g, pubOpts, subOpts)
		})
	t.Run("Reconnect", func(t *testing.T) { wmtest.Reconnect(t, newPS, k.Restart, false) })
}

// TestPubSubWithDedupe runs the suite with deduplication in the consumer
// loop, one memory store shared by every subscriber of the run. Features
// as [TestPubSub], and exactly-once delivery to Watermill: each message ID
// reaches one group's handlers once, however often a record is fetched
// again (the suite reads without deduplicating and fails on a second
// copy). The suite then skips TestContinueAfterSubscribeClose and
// TestConcurrentClose, which [TestPubSub] covers. The suite runs in its
// short form here (ForceShort: 50 to 100 instead of 1 000 to 10 000 messages in
// its load tests, 5 instead of 300 nacks), to keep the test time down;
// [TestPubSub] is the full one, and the reconnect scenario keeps its
// 10 000 messages.
func TestPubSubWithDedupe(t *testing.T) {
	k := wmtest.StartKafka(t)
	store, err := dedupe.NewMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	pubOpts, subOpts := suiteOptions()
	subOpts = append(subOpts, wmkafka.WithDedupe(store))
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
		return newPubSub(t, k.Brokers(), group, pubOpts, subOpts)
	}
	tests.TestPubSub(t, features, newPS,
		func(t *testing.T, g string) (message.Publisher, message.Subscriber) {
			return newPubSub(t, k.Brokers(), g, pubOpts, subOpts)
		})
	t.Run("Reconnect", func(t *testing.T) { wmtest.Reconnect(t, newPS, k.Restart, true) })
}
