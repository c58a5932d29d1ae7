package kafkapub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// The benchmarks below measure our publisher and the raw kafka-go Writer
// side by side, in alternating rounds within one benchmark, so that load
// from other processes hits both alike:
//
//	go test -run '^$' -bench Interleaved -benchtime 5x ./publisher/kafkapub/
//
// Each iteration is one round of each side; the reported raw-msgs/s and
// ours-msgs/s are the medians of the rounds' rates, ours/raw their ratio.
// Both sides send the same 256-byte bodies with the same ID headers
// (precomputed for the raw side), acks from all replicas and key hashing.

const benchBody = 256

func benchMsgs(n int) []publisher.Message {
	body := make([]byte, benchBody)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	msgs := make([]publisher.Message, n)
	for i := range msgs {
		msgs[i] = publisher.Message{Type: "order.created", Key: []any{fmt.Sprintf("o-%d", i)}, Body: body}
	}
	return msgs
}

// rawMsgs are the records our publisher writes for msgs.
func rawMsgs(b *testing.B, msgs []publisher.Message) []kafkago.Message {
	out := make([]kafkago.Message, len(msgs))
	for i := range msgs {
		l, err := publisher.IDs(context.Background(), gen, &msgs[i])
		if err != nil {
			b.Fatal(err)
		}
		key, _ := publisher.KeyBytes(msgs[i].Key)
		out[i] = kafkago.Message{Key: key, Value: msgs[i].Body, Time: time.Now(), Headers: []kafkago.Header{
			{Key: lineage.HeaderMessageID, Value: []byte(l.MessageID.String())},
			{Key: lineage.HeaderCorrelationID, Value: []byte(l.CorrelationID.String())},
			{Key: lineage.HeaderMessageType, Value: []byte(msgs[i].Type)},
		}}
	}
	return out
}

// benchSides returns a raw writer with the given batch size and a publisher
// with default settings, each on a topic of its own, both warmed up.
func benchSides(b *testing.B, batchSize int) (*kafkago.Writer, *kafkapub.Publisher) {
	brokers := testenv.KafkaBrokers(b)
	ctx := testenv.Context(b, 30*time.Second)
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: testenv.Name(b, "raw"), Balancer: &kafkago.Hash{},
		MaxAttempts: 1, BatchSize: batchSize, BatchBytes: kafkapub.DefaultMaxBodySize + 1<<16, BatchTimeout: time.Millisecond,
		WriteTimeout: kafkapub.DefaultWriteTimeout, RequiredAcks: kafkago.RequireAll, AllowAutoTopicCreation: true}
	b.Cleanup(func() { w.Close() })
	for {
		err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("warm"), Value: []byte("up")})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("warm-up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p, err := kafkapub.New(brokers, testenv.Name(b, "ours"), gen, kafkapub.WithAutoTopicCreation())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := p.Publish(ctx, publisher.Message{Type: "warm", Key: []any{"up"}}); err != nil {
		b.Fatal(err)
	}
	return w, p
}

// rounds runs raw and ours alternately, once each per iteration, and
// reports the median rates of the rounds; each round sends perRound
// messages.
func rounds(b *testing.B, perRound int, raw, ours func(round int)) {
	var rawRates, ourRates []float64
	for i := 0; b.Loop(); i++ {
		sides := []struct {
			f     func(int)
			rates *[]float64
		}{{raw, &rawRates}, {ours, &ourRates}}
		if i%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, s := range sides {
			start := time.Now()
			s.f(i)
			*s.rates = append(*s.rates, float64(perRound)/time.Since(start).Seconds())
		}
	}
	median := func(v []float64) float64 {
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	r, o := median(rawRates), median(ourRates)
	b.ReportMetric(r, "raw-msgs/s")
	b.ReportMetric(o, "ours-msgs/s")
	b.ReportMetric(o/r, "ours/raw")
}

// BenchmarkPublishInterleaved compares our Publish with the raw kafka-go
// Writer:
//
//   - single: one goroutine, one message per call (raw: WriteMessages of
//     one message, BatchSize 1);
//   - concurrent64: 64 goroutines each publishing one message per call and
//     waiting for its acknowledgement (raw: one goroutine calling
//     WriteMessages with 64 messages, BatchSize 64), so that group commit
//     is measured against the batching the raw client needs its caller to
//     do.
func BenchmarkPublishInterleaved(b *testing.B) {
	ctx := context.Background()
	b.Run("single", func(b *testing.B) {
		const perRound = 300
		msgs := benchMsgs(perRound * 4)
		recs := rawMsgs(b, msgs)
		w, p := benchSides(b, 1)
		rounds(b, perRound, func(r int) {
			for i := range perRound {
				if err := w.WriteMessages(ctx, recs[(r*perRound+i)%len(recs)]); err != nil {
					b.Fatal(err)
				}
			}
		}, func(r int) {
			for i := range perRound {
				if err := p.Publish(ctx, msgs[(r*perRound+i)%len(msgs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("concurrent64", func(b *testing.B) {
		const (
			workers  = 64
			perG     = 40
			perRound = workers * perG
		)
		msgs := benchMsgs(perRound * 2)
		recs := rawMsgs(b, msgs)
		w, p := benchSides(b, workers)
		rounds(b, perRound, func(r int) {
			for i := range perG {
				off := ((r*perG + i) * workers) % len(recs)
				if err := w.WriteMessages(ctx, recs[off:off+workers]...); err != nil {
					b.Fatal(err)
				}
			}
		}, func(r int) {
			var wg sync.WaitGroup
			for g := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perG {
						if err := p.Publish(ctx, msgs[(r*perRound+g*perG+i)%len(msgs)]); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	})
}

// nopObserver is a publisher.Observer that does nothing.
type nopObserver struct{}

func (nopObserver) PublishStart(ctx context.Context, _ *publisher.Publication) context.Context {
	return ctx
}
func (nopObserver) PublishRetry(context.Context, *publisher.Publication, error) {}
func (nopObserver) PublishDone(context.Context, *publisher.Publication, error)  {}

// BenchmarkPublishHooks measures what the observer hooks cost a Publish
// (one goroutine, one message per call, over the in-process broker): none
// without an observer, nop with one that does nothing. Read allocs/op:
// without an observer the hooks must add nothing.
//
//	go test -run '^$' -bench PublishHooks -benchmem ./publisher/kafkapub/
func BenchmarkPublishHooks(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []publisher.Option
	}{
		{"none", nil},
		{"nop", []publisher.Option{publisher.WithObserver(nopObserver{})}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			brokers := testenv.KafkaBrokers(b)
			p, err := kafkapub.New(brokers, testenv.Name(b, "hooks"), gen, append(bc.opts, kafkapub.WithAutoTopicCreation())...)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ctx := testenv.Context(b, 5*time.Minute)
			msgs := benchMsgs(1000)
			for range 50 { // the topic is created on first use
				if err = p.Publish(ctx, msgs[0]); err == nil {
					break
				}
			}
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := p.Publish(ctx, msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
