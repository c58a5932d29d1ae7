package kafkapub_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

// TestHugeBodyRejectedWithoutCopy: a 100 MB body is refused with
// ErrInvalid before anything is sent, and refusing it allocates nothing of
// its size (no copy, no encoding of the body for its ID).
func TestHugeBodyRejectedWithoutCopy(t *testing.T) {
	k := testenv.InProcessKafka(t)
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, k.Brokers(), topic)
	ctx := testenv.Context(t, 30*time.Second)
	huge := make([]byte, 100<<20)
	for _, tc := range []struct {
		name string
		msg  publisher.Message
	}{
		{"keyed", publisher.Message{Type: "blob", Key: []any{"b-1"}, Body: huge}},
		{"content id", publisher.Message{Type: "blob", Body: huge}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			errOne := p.Publish(ctx, tc.msg)
			errBatch := p.PublishBatch(ctx, publisher.Message{Type: "small", Key: []any{"s"}}, tc.msg)
			runtime.ReadMemStats(&after)
			for name, err := range map[string]error{"Publish": errOne, "PublishBatch": errBatch} {
				if !errors.Is(err, publisher.ErrInvalid) || !strings.Contains(err.Error(), "104857600") {
					t.Errorf("%s = %v, want ErrInvalid naming the size", name, err)
				}
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
				t.Errorf("refusing a 100 MB body allocated %d bytes", got)
			}
		})
	}
	if n, err := k.TopicSize(ctx, topic); err == nil && n != 0 {
		t.Errorf("%d records written", n)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestBrokerStopsMidPublish: the broker stops while Publish calls are in
// flight. Each call returns within its context, and every call that
// reported success names a record the topic holds once the broker is back
// on the same data directory and port.
func TestBrokerStopsMidPublish(t *testing.T) {
	k := testenv.InProcessKafka(t, testenv.KafkaDataDir(t.TempDir()), testenv.KafkaPorts(freePort(t)))
	topic := testenv.Name(t, "topic")
	p := newPublisher(t, k.Brokers(), topic, publisher.WithBackoff(5*time.Millisecond, 50*time.Millisecond))
	ctx := testenv.Context(t, 60*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"warm-up"}}); err != nil {
		t.Fatal(err)
	}
	const (
		workers = 16
		timeout = 700 * time.Millisecond
		slack   = 500 * time.Millisecond
	)
	type result struct {
		id      string
		err     error
		elapsed time.Duration
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := publisher.Message{Type: "t", Key: []any{fmt.Sprintf("w%d", w), i}}
				cctx, cancel := context.WithTimeout(ctx, timeout)
				start := time.Now()
				err := p.Publish(cctx, msg)
				el := time.Since(start)
				cancel()
				mu.Lock()
				results = append(results, result{gen.MustID("t", fmt.Sprintf("w%d", w), i).String(), err, el})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	k.Close()
	time.Sleep(2 * timeout)
	close(stop)
	wg.Wait()
	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, r := range readWithKcat(t, k.Brokers(), topic) {
		stored[r.header(lineage.HeaderMessageID)] = true
	}
	var ok, failed int
	for _, r := range results {
		if r.elapsed > timeout+slack {
			t.Errorf("a Publish with a %v context returned after %v (%v)", timeout, r.elapsed, r.err)
		}
		if r.err == nil {
			ok++
			if !stored[r.id] {
				t.Errorf("Publish of %s reported success, but the record is not in the topic", r.id)
			}
			continue
		}
		failed++
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Errorf("Publish failed with %v, want a deadline error", r.err)
		}
	}
	if ok == 0 || failed == 0 {
		t.Fatalf("%d successes and %d failures: the broker did not stop mid-publish", ok, failed)
	}
	t.Logf("%d publishes succeeded, %d failed; %d records stored", ok, failed, len(stored))
}

// TestCancelWhileInFlight: the broker holds a produce request. A Publish
// whose record is in that request, and one whose record waits behind it,
// both return when their contexts end; the waiting record is then never
// sent, while the held one may still land (at-least-once).
func TestCancelWhileInFlight(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	p := newPublisher(t, brokers, "held")
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"warm-up"}}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	holding := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		first := false
		once.Do(func() { first = true })
		if first {
			close(holding)
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false // then handled as usual
	})
	const timeout = 300 * time.Millisecond
	publish := func(key string) (time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		err := p.Publish(cctx, publisher.Message{Type: "t", Key: []any{key}})
		return time.Since(start), err
	}
	type res struct {
		el  time.Duration
		err error
	}
	held := make(chan res, 1)
	go func() {
		el, err := publish("held")
		held <- res{el, err}
	}()
	<-holding
	el, err := publish("queued")
	if !errors.Is(err, context.DeadlineExceeded) || el > timeout+500*time.Millisecond {
		t.Errorf("queued record: Publish = %v after %v, want a deadline error after %v", err, el, timeout)
	}
	r := <-held
	if !errors.Is(r.err, context.DeadlineExceeded) || r.el > timeout+500*time.Millisecond {
		t.Errorf("held record: Publish = %v after %v, want a deadline error after %v", r.err, r.el, timeout)
	}
	close(release)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"after"}}); err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, r := range readWithKcat(t, brokers, "held") {
		keys[r.Key]++
	}
	if keys["queued"] != 0 || keys["after"] != 1 || keys["warm-up"] != 1 {
		t.Errorf("records by key: %v; want no \"queued\" record (its caller gave up before it was sent)", keys)
	}
	t.Logf("records by key: %v", keys)
}

// TestGroupCommit: concurrent Publish calls share produce requests, and a
// PublishBatch to one partition is one request; every record arrives.
func TestGroupCommit(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "merged"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var requests, records atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		requests.Add(1)
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			for _, p := range tp.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(p.Records); err == nil {
					records.Add(int64(b.NumRecords))
				}
			}
		}
		return nil, nil, false
	})
	p := newPublisher(t, c.ListenAddrs(), "merged")
	ctx := testenv.Context(t, 30*time.Second)

	const workers, each = 32, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{fmt.Sprint("w", w), i}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := requests.Load(); n > workers*each/2 {
		t.Errorf("%d concurrent publishes took %d produce requests: not merged", workers*each, n)
	}
	t.Logf("%d concurrent publishes in %d produce requests", workers*each, requests.Load())

	requests.Store(0)
	var batch []publisher.Message
	for i := range 100 {
		batch = append(batch, publisher.Message{Type: "t", Key: []any{"batch", i}})
	}
	if err := p.PublishBatch(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("a batch of 100 records for one partition took %d produce requests, want 1", n)
	}
	if n := records.Load(); n != workers*each+100 {
		t.Errorf("the broker received %d records, want %d", n, workers*each+100)
	}
}
