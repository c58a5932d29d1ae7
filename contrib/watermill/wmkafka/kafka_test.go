package wmkafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/uuidforge/uuidforge/contrib/watermill/internal/wmtest"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmkafka"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
)

func TestRoundTrip(t *testing.T) {
	k := wmtest.StartKafka(t)
	pubOpts, subOpts := suiteOptions()
	p, s := newPubSub(t, k.Brokers(), wmtest.Name(t, "g"), pubOpts, subOpts)
	defer p.Close()
	defer s.Close()
	wmtest.RoundTrip(t, p, s, wmtest.Name(t, "wm_rt"))

	// The business key is the record key and comes back as metadata.
	gen := forge.MustNew("watermill.test.example")
	topic := wmtest.Name(t, "wm_key")
	m, err := wmforge.NewMessage(gen, "order.created", []any{"o-1001"}, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(topic, m); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		got.Ack()
		if got.UUID != m.UUID || got.Metadata.Get(wmforge.MetadataMessageKey) != "o-1001" || got.Metadata.Get(wmforge.MetadataMessageType) != "order.created" {
			t.Errorf("got %s %v, want %s with key o-1001", got.UUID, got.Metadata, m.UUID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not received")
	}
}

// WithTLS and WithSASL reach the publisher, the subscriber and
// SubscribeInitialize's topic creation on a cluster that requires both;
// without them, SubscribeInitialize fails.
func TestTLSAndSASL(t *testing.T) {
	k := testenv.InProcessSecureKafka(t, kafkatest.WithMinSessionTimeout(time.Second)) // the suite's consumers ask for 2 s
	secure := []wmkafka.Option{wmkafka.WithTLS(k.TLS.ClientConfig()), wmkafka.WithSASL(k.SASL(t, kafkatest.SASLScramSHA512))}
	pubOpts, subOpts := suiteOptions()
	p, s := newPubSub(t, k.Brokers(), wmtest.Name(t, "g"), append(pubOpts, secure...), append(subOpts, secure...))
	defer p.Close()
	defer s.Close()
	wmtest.RoundTrip(t, p, s, wmtest.Name(t, "wm_secure"))

	_, plain := newPubSub(t, k.Brokers(), wmtest.Name(t, "g2"), pubOpts, subOpts)
	defer plain.Close()
	err := plain.(message.SubscribeInitializer).SubscribeInitialize(wmtest.Name(t, "wm_plain"))
	if err == nil || !strings.HasPrefix(err.Error(), "wmkafka: create topic ") || strings.Contains(err.Error(), k.Password) {
		t.Fatalf("SubscribeInitialize without TLS and SASL = %v, want wmkafka's error", err)
	}
}
