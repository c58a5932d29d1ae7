package lineage

import (
	"context"
	"testing"

	"github.com/google/uuid"
)

func TestContextRoundTrip(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("empty context reported a lineage")
	}
	want := Lineage{MessageID: uuid.New(), CorrelationID: uuid.New(), CausationID: uuid.New(), Type: "order.created"}
	got, ok := FromContext(NewContext(context.Background(), want))
	if !ok || got != want {
		t.Fatalf("FromContext = %+v, %v; want %+v", got, ok, want)
	}
}
