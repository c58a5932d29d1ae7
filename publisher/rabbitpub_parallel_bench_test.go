package publisher_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// benchGoroutines is the number of goroutines publishing at once in
// BenchmarkRabbitMQParallel: a busy service publishing from many handlers.
const benchGoroutines = 64

// fanOut runs b.N calls of f spread over benchGoroutines goroutines.
func fanOut(b *testing.B, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range benchGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
}

// BenchmarkRabbitMQParallel publishes from 64 goroutines at once, each
// waiting for its own confirm: our publisher (its channel pool) against raw
// amqp091-go with every goroutine publishing on one shared channel in
// confirm mode, so the confirms of all 64 are pipelined.
func BenchmarkRabbitMQParallel(b *testing.B) {
	url := testenv.AMQPURL(b)
	msgs := benchMessages(1000)
	pubs := rawPublishings(b, msgs)
	ctx := context.Background()

	b.Run("goroutines64/raw", func(b *testing.B) {
		q, c := benchQueue(b, url)
		ch, err := c.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		fanOut(b, func(i int) {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, pubs[i%len(pubs)])
			if err != nil {
				b.Error(err)
				return
			}
			if ok, err := dc.WaitContext(ctx); !ok || err != nil {
				b.Errorf("not acked: %v", err)
			}
		})
		reportRate(b, 1)
	})
	b.Run("goroutines64/ours", func(b *testing.B) {
		q, _ := benchQueue(b, url)
		p, err := rabbitpub.New(url, benchGen, rabbitpub.WithQueue(q))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		if err := p.Publish(ctx, msgs[0]); err != nil { // connect
			b.Fatal(err)
		}
		fanOut(b, func(i int) {
			if err := p.Publish(ctx, msgs[i%len(msgs)]); err != nil {
				b.Error(err)
			}
		})
		reportRate(b, 1)
	})
}
