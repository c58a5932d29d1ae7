package publisher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// The benchmarks below run the raw driver and our publisher side by side on
// the same messages, so the ratio can be read off one run:
//
//	go test -run '^$' -bench . ./publisher/
//
// Each reports msgs/s. The raw baselines send the same bodies and the same
// ID properties/headers (precomputed), with the same delivery guarantees:
// persistent messages with publisher confirms on RabbitMQ; acks from all
// replicas, key hashing and the same batching settings on Kafka.

const benchBatch = 100

var benchGen = forge.MustNew("bench.example.com")

func benchMessages(n int) []publisher.Message {
	msgs := make([]publisher.Message, n)
	for i := range msgs {
		msgs[i] = publisher.Message{Type: "order.created", Key: []any{fmt.Sprintf("o-%d", i)}, Body: []byte(`{"total":1234,"currency":"EUR"}`)}
	}
	return msgs
}

func reportRate(b *testing.B, perOp int) {
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), "msgs/s")
}

func benchQueue(b *testing.B, url string) (string, *amqp.Connection) {
	c, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	ch, err := c.Channel()
	if err != nil {
		b.Fatal(err)
	}
	q := testenv.Name(b, "bench")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ch.QueueDelete(q, false, false, false)
		c.Close()
	})
	return q, c
}

// rawPublishings are the AMQP messages our publisher would send for msgs.
func rawPublishings(b *testing.B, msgs []publisher.Message) []amqp.Publishing {
	out := make([]amqp.Publishing, len(msgs))
	for i := range msgs {
		l, err := publisher.IDs(context.Background(), benchGen, &msgs[i])
		if err != nil {
			b.Fatal(err)
		}
		key, _ := publisher.KeyBytes(msgs[i].Key)
		out[i] = amqp.Publishing{MessageId: l.MessageID.String(), CorrelationId: l.CorrelationID.String(), Type: msgs[i].Type,
			DeliveryMode: amqp.Persistent, ContentType: rabbitpub.DefaultContentType, Timestamp: time.Now(), Body: msgs[i].Body,
			Headers: amqp.Table{lineage.HeaderMessageKey: string(key)}}
	}
	return out
}

func BenchmarkRabbitMQ(b *testing.B) {
	url := testenv.AMQPURL(b)
	msgs := benchMessages(1000)
	pubs := rawPublishings(b, msgs)
	ctx := context.Background()

	b.Run("single/raw", func(b *testing.B) {
		q, c := benchQueue(b, url)
		ch, err := c.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, pubs[i%len(pubs)])
			if err != nil {
				b.Fatal(err)
			}
			if ok, err := dc.WaitContext(ctx); !ok || err != nil {
				b.Fatalf("not acked: %v", err)
			}
		}
		reportRate(b, 1)
	})
	b.Run("single/ours", func(b *testing.B) {
		q, _ := benchQueue(b, url)
		p, err := rabbitpub.New(url, benchGen, rabbitpub.WithRoutingKey(func(*publisher.Message) string { return q }))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if err := p.Publish(ctx, msgs[i%len(msgs)]); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, 1)
	})
	b.Run(fmt.Sprintf("batch%d/raw", benchBatch), func(b *testing.B) {
		q, c := benchQueue(b, url)
		ch, err := c.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		dcs := make([]*amqp.DeferredConfirmation, benchBatch)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			off := (i * benchBatch) % len(pubs)
			for j := range benchBatch {
				if dcs[j], err = ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, pubs[off+j]); err != nil {
					b.Fatal(err)
				}
			}
			for _, dc := range dcs {
				if ok, err := dc.WaitContext(ctx); !ok || err != nil {
					b.Fatalf("not acked: %v", err)
				}
			}
		}
		reportRate(b, benchBatch)
	})
	b.Run(fmt.Sprintf("batch%d/ours", benchBatch), func(b *testing.B) {
		q, _ := benchQueue(b, url)
		p, err := rabbitpub.New(url, benchGen, rabbitpub.WithRoutingKey(func(*publisher.Message) string { return q }))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			off := (i * benchBatch) % len(msgs)
			if err := p.PublishBatch(ctx, msgs[off:off+benchBatch]...); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, benchBatch)
	})
}

// rawRecords are the Kafka records our publisher would write for msgs.
func rawRecords(b *testing.B, msgs []publisher.Message) []kafkago.Message {
	out := make([]kafkago.Message, len(msgs))
	for i := range msgs {
		l, err := publisher.IDs(context.Background(), benchGen, &msgs[i])
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

func rawWriter(brokers []string, topic string, batchSize int) *kafkago.Writer {
	return &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{}, MaxAttempts: 1,
		BatchSize: batchSize, BatchBytes: kafkapub.DefaultMaxBodySize + 1<<16, BatchTimeout: time.Millisecond,
		WriteTimeout: kafkapub.DefaultWriteTimeout, RequiredAcks: kafkago.RequireAll, AllowAutoTopicCreation: true}
}

// warm creates the topic and loads the writer's metadata.
func warm(b *testing.B, w *kafkago.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("warm"), Value: []byte("up")})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			b.Fatalf("warm-up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func BenchmarkKafka(b *testing.B) {
	brokers := testenv.KafkaBrokers(b)
	msgs := benchMessages(1000)
	recs := rawRecords(b, msgs)
	ctx := context.Background()
	ours := func(b *testing.B) *kafkapub.Publisher {
		topic := testenv.Name(b, "bench")
		warm(b, rawWriter(brokers, topic, 1))
		p, err := kafkapub.New(brokers, topic, benchGen)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Publish(ctx, msgs[0]); err != nil { // metadata
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	}
	raw := func(b *testing.B, batchSize int) *kafkago.Writer {
		w := rawWriter(brokers, testenv.Name(b, "bench"), batchSize)
		warm(b, w)
		b.Cleanup(func() { w.Close() })
		return w
	}

	b.Run("single/raw", func(b *testing.B) {
		w := raw(b, 1)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if err := w.WriteMessages(ctx, recs[i%len(recs)]); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, 1)
	})
	b.Run("single/ours", func(b *testing.B) {
		p := ours(b)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if err := p.Publish(ctx, msgs[i%len(msgs)]); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, 1)
	})
	b.Run(fmt.Sprintf("batch%d/raw", benchBatch), func(b *testing.B) {
		w := raw(b, kafkapub.DefaultBatchSize)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			off := (i * benchBatch) % len(recs)
			if err := w.WriteMessages(ctx, recs[off:off+benchBatch]...); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, benchBatch)
	})
	b.Run(fmt.Sprintf("batch%d/ours", benchBatch), func(b *testing.B) {
		p := ours(b)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			off := (i * benchBatch) % len(msgs)
			if err := p.PublishBatch(ctx, msgs[off:off+benchBatch]...); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, benchBatch)
	})
}

// interleaved runs raw and ours alternately within one benchmark, timing
// each separately, so that load from other processes hits both alike; it
// reports both rates and ours/raw.
func interleaved(b *testing.B, perOp int, raw, ours func(i int)) {
	var tRaw, tOurs time.Duration
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 { // alternate which goes first
			s := time.Now()
			raw(i)
			tRaw += time.Since(s)
			s = time.Now()
			ours(i)
			tOurs += time.Since(s)
		} else {
			s := time.Now()
			ours(i)
			tOurs += time.Since(s)
			s = time.Now()
			raw(i)
			tRaw += time.Since(s)
		}
	}
	rawRate := float64(b.N*perOp) / tRaw.Seconds()
	oursRate := float64(b.N*perOp) / tOurs.Seconds()
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(oursRate, "ours-msgs/s")
	b.ReportMetric(oursRate/rawRate, "ours/raw")
}

// BenchmarkRabbitMQInterleaved gives the ours/raw ratio of RabbitMQ single
// and batch publishing, robust to load that drifts during the run.
func BenchmarkRabbitMQInterleaved(b *testing.B) {
	url := testenv.AMQPURL(b)
	msgs := benchMessages(1000)
	pubs := rawPublishings(b, msgs)
	ctx := context.Background()
	setup := func(b *testing.B) (*amqp.Channel, string, *rabbitpub.Publisher, string) {
		qRaw, c := benchQueue(b, url)
		ch, err := c.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		qOurs, _ := benchQueue(b, url)
		p, err := rabbitpub.New(url, benchGen, rabbitpub.WithRoutingKey(func(*publisher.Message) string { return qOurs }))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		if err := p.Publish(ctx, msgs[0]); err != nil { // connect
			b.Fatal(err)
		}
		return ch, qRaw, p, qOurs
	}
	b.Run("single", func(b *testing.B) {
		ch, q, p, _ := setup(b)
		interleaved(b, 1, func(i int) {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, pubs[i%len(pubs)])
			if err != nil {
				b.Fatal(err)
			}
			if ok, err := dc.WaitContext(ctx); !ok || err != nil {
				b.Fatalf("not acked: %v", err)
			}
		}, func(i int) {
			if err := p.Publish(ctx, msgs[i%len(msgs)]); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run(fmt.Sprintf("batch%d", benchBatch), func(b *testing.B) {
		ch, q, p, _ := setup(b)
		dcs := make([]*amqp.DeferredConfirmation, benchBatch)
		interleaved(b, benchBatch, func(i int) {
			off := (i * benchBatch) % len(pubs)
			var err error
			for j := range benchBatch {
				if dcs[j], err = ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, pubs[off+j]); err != nil {
					b.Fatal(err)
				}
			}
			for _, dc := range dcs {
				if ok, err := dc.WaitContext(ctx); !ok || err != nil {
					b.Fatalf("not acked: %v", err)
				}
			}
		}, func(i int) {
			off := (i * benchBatch) % len(msgs)
			if err := p.PublishBatch(ctx, msgs[off:off+benchBatch]...); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkKafkaInterleaved gives the ours/raw ratio of Kafka single and
// batch publishing, robust to load that drifts during the run.
func BenchmarkKafkaInterleaved(b *testing.B) {
	brokers := testenv.KafkaBrokers(b)
	msgs := benchMessages(1000)
	recs := rawRecords(b, msgs)
	ctx := context.Background()
	setup := func(b *testing.B, batchSize int) (*kafkago.Writer, *kafkapub.Publisher) {
		w := rawWriter(brokers, testenv.Name(b, "bench"), batchSize)
		warm(b, w)
		b.Cleanup(func() { w.Close() })
		topic := testenv.Name(b, "bench")
		warm(b, rawWriter(brokers, topic, 1))
		p, err := kafkapub.New(brokers, topic, benchGen)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		if err := p.Publish(ctx, msgs[0]); err != nil {
			b.Fatal(err)
		}
		return w, p
	}
	b.Run("single", func(b *testing.B) {
		w, p := setup(b, 1)
		interleaved(b, 1, func(i int) {
			if err := w.WriteMessages(ctx, recs[i%len(recs)]); err != nil {
				b.Fatal(err)
			}
		}, func(i int) {
			if err := p.Publish(ctx, msgs[i%len(msgs)]); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run(fmt.Sprintf("batch%d", benchBatch), func(b *testing.B) {
		w, p := setup(b, kafkapub.DefaultBatchSize)
		interleaved(b, benchBatch, func(i int) {
			off := (i * benchBatch) % len(recs)
			if err := w.WriteMessages(ctx, recs[off:off+benchBatch]...); err != nil {
				b.Fatal(err)
			}
		}, func(i int) {
			off := (i * benchBatch) % len(msgs)
			if err := p.PublishBatch(ctx, msgs[off:off+benchBatch]...); err != nil {
				b.Fatal(err)
			}
		})
	})
}
