package wmtest

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/message/subscriber"
)

// RoundTrip publishes messages whose Watermill UUIDs are not all UUIDs (a
// ULID, an upper-case UUID, an empty one, free text) with metadata through
// pub and checks that sub gives every one back with its exact UUID,
// metadata and payload.
func RoundTrip(t *testing.T, pub message.Publisher, sub message.Subscriber, topic string) {
	t.Helper()
	if si, ok := sub.(message.SubscribeInitializer); ok {
		if err := si.SubscribeInitialize(topic); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	uuids := []string{"01J9Z3K6Q8W2E4R6T8Y0U2I4O6", "0B6C3AD9-7A5E-4F0A-9D0B-2A1C3F4E5D6C", "", "order 1001, try 2", "0b6c3ad9-7a5e-4f0a-9d0b-2a1c3f4e5d6c"}
	var sent []*message.Message
	for i, id := range uuids {
		m := message.NewMessage(id, []byte{byte(i), 0xff, 'x'})
		m.Metadata.Set("test", "value "+id)
		m.Metadata.Set("unicode", "héllo ✓")
		middleware.SetCorrelationID("request-42", m)
		if err := pub.Publish(topic, m); err != nil {
			t.Fatalf("publish %q: %v", id, err)
		}
		sent = append(sent, m)
	}
	got, all := subscriber.BulkRead(ch, len(sent), 30*time.Second)
	if !all {
		t.Fatalf("received %d of %d", len(got), len(sent))
	}
	byPayload := map[string]*message.Message{}
	for _, m := range got {
		byPayload[string(m.Payload)] = m
	}
	for _, s := range sent {
		r := byPayload[string(s.Payload)]
		if r == nil {
			t.Errorf("message %q not received", s.UUID)
			continue
		}
		if r.UUID != s.UUID {
			t.Errorf("UUID %q came back as %q", s.UUID, r.UUID)
		}
		for k, v := range s.Metadata {
			if r.Metadata[k] != v {
				t.Errorf("message %q: metadata %s = %q, want %q", s.UUID, k, r.Metadata[k], v)
			}
		}
	}
}
