package consumer_test

import (
	"context"
	"slices"
	"testing"

	"github.com/uuidforge/uuidforge/consumer"
)

type tagKey struct{}

// tagObserver appends its name to a shared log for each event and adds it
// to the context it returns.
type tagObserver struct {
	name string
	log  *[]string
}

func (o tagObserver) DeliveryStart(ctx context.Context, _ *consumer.Message) context.Context {
	*o.log = append(*o.log, o.name+":start")
	prev, _ := ctx.Value(tagKey{}).(string)
	return context.WithValue(ctx, tagKey{}, prev+o.name)
}
func (o tagObserver) AttemptDone(context.Context, *consumer.Message, consumer.Attempt) {
	*o.log = append(*o.log, o.name+":attempt")
}
func (o tagObserver) DeliveryDone(context.Context, *consumer.Message, consumer.Delivery) {
	*o.log = append(*o.log, o.name+":done")
}

func TestJoinObservers(t *testing.T) {
	var log []string
	a, b, c := tagObserver{"a", &log}, tagObserver{"b", &log}, tagObserver{"c", &log}
	if consumer.JoinObservers(nil, nil) != nil {
		t.Fatal("JoinObservers of nils is not nil")
	}
	if o := consumer.JoinObservers(nil, a); o != consumer.Observer(a) {
		t.Fatalf("JoinObservers of one = %v, want it", o)
	}
	o := consumer.JoinObservers(a, nil, consumer.JoinObservers(b, c))
	ctx := o.DeliveryStart(context.Background(), &consumer.Message{})
	o.AttemptDone(ctx, &consumer.Message{}, consumer.Attempt{})
	o.DeliveryDone(ctx, &consumer.Message{}, consumer.Delivery{})
	want := []string{"a:start", "b:start", "c:start", "a:attempt", "b:attempt", "c:attempt", "a:done", "b:done", "c:done"}
	if !slices.Equal(log, want) || ctx.Value(tagKey{}) != "abc" {
		t.Fatalf("events %v, context %v; want %v and abc", log, ctx.Value(tagKey{}), want)
	}
}
