package publishertest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/publishertest"
)

func TestRecorderStampsLikeThePublishers(t *testing.T) {
	gen := forge.MustNew("orders.example.com")
	rec := publishertest.New(gen)
	parent := lineage.Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), Type: "order.placed"}
	ctx := lineage.NewContext(context.Background(), parent)
	msg := publisher.Message{Type: "payment.captured", Key: []any{"SO-1", 2}, Body: []byte("x"), Headers: map[string]string{"h": "v"}}
	if err := rec.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	want, err := publisher.IDs(ctx, gen, &msg)
	if err != nil {
		t.Fatal(err)
	}
	got := rec.Messages()
	if len(got) != 1 || got[0].Lineage != want || string(got[0].Key) != `["SO-1",2]` || got[0].Message.Headers["h"] != "v" {
		t.Fatalf("recorded %+v, want lineage %+v", got, want)
	}
	msg.Headers["h"] = "changed"
	msg.Body[0] = 'y'
	if got := rec.Messages()[0].Message; got.Headers["h"] != "v" || string(got.Body) != "x" {
		t.Fatalf("the recorder keeps the caller's maps and slices: %+v", got)
	}
}

func TestRecorderRejectsInvalidBatchWhole(t *testing.T) {
	rec := publishertest.New(forge.MustNew("ns"))
	rec.SetMaxBodySize(3)
	err := rec.PublishBatch(context.Background(),
		publisher.Message{Type: "a", Key: []any{1}},
		publisher.Message{Type: "b", Key: []any{1}, Body: []byte("toolong")})
	if !errors.Is(err, publisher.ErrInvalid) || rec.Len() != 0 {
		t.Fatalf("PublishBatch = %v with %d recorded; want ErrInvalid and nothing recorded", err, rec.Len())
	}
	if !strings.HasPrefix(err.Error(), `publishertest: batch message 1: publisher: message "b": `) {
		t.Errorf("PublishBatch = %q, want it to name the package, then the message", err)
	}
	err = rec.Publish(context.Background(), publisher.Message{Type: "b", Key: []any{1}, Body: []byte("toolong")})
	if !errors.Is(err, publisher.ErrInvalid) || !strings.HasPrefix(err.Error(), `publishertest: publisher: message "b": `) {
		t.Errorf("Publish = %q, want ErrInvalid naming the package, without a batch position", err)
	}
}

func TestRecorderFailWith(t *testing.T) {
	rec := publishertest.New(forge.MustNew("ns"))
	boom := errors.New("broker down")
	rec.FailWith(func(m publisher.Message) error {
		if m.Type == "bad" {
			return boom
		}
		return nil
	})
	err := rec.PublishBatch(context.Background(),
		publisher.Message{Type: "good", Key: []any{1}},
		publisher.Message{Type: "bad", Key: []any{1}})
	var pe *publisher.PublishError
	if !errors.Is(err, boom) || !errors.As(err, &pe) || rec.Len() != 1 || rec.Messages()[0].Message.Type != "good" {
		t.Fatalf("PublishBatch = %v with %d recorded; want the bad one failed and the good one recorded", err, rec.Len())
	}
	rec.Reset()
	if rec.Len() != 0 {
		t.Fatal("Reset kept messages")
	}
}

func TestRecorderHonoursContext(t *testing.T) {
	rec := publishertest.New(forge.MustNew("ns"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rec.Publish(ctx, publisher.Message{Type: "a", Key: []any{1}}); !errors.Is(err, context.Canceled) || rec.Len() != 0 {
		t.Fatalf("Publish on a cancelled context = %v", err)
	}
}
