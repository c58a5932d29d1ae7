package wmkafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/contrib/watermill/internal/wmtest"
	"github.com/uuidforge/uuidforge/contrib/watermill/wmforge"
	"github.com/uuidforge/uuidforge/forge"
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
