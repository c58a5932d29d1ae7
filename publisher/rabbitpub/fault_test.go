package rabbitpub_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// TestConfirmsSurviveConnectionKills publishes 10 000 messages, singly and in
// batches from several goroutines, while the broker closes the publisher's
// connections several times. Every message must be in the queue afterwards;
// duplicates (a confirm lost with its connection) are allowed and counted.
func TestConfirmsSurviveConnectionKills(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: -short")
	}
	adminURL := testenv.AMQPURL(t)
	user := testenv.NewRabbitUser(t, adminURL) // its connections, and only those, are killed
	q, ch := declareQueue(t, adminURL)
	p := newPublisher(t, user.URL, toQueue(q), rabbitpub.WithConfirmTimeout(5*time.Second))
	ctx := testenv.Context(t, 90*time.Second)

	const (
		total   = 10000
		workers = 8
		batch   = 50
		kills   = 4
	)
	var killsDone atomic.Int32
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for range kills {
			time.Sleep(300 * time.Millisecond)
			if err := user.CloseConnections(ctx, "test: connection kill"); err != nil {
				t.Errorf("close_all_user_connections: %v", err)
			}
			killsDone.Add(1)
		}
	}()

	// Messages are published in phases; phase k does not start before
	// kill k-1 is done, so the kills always land while messages are
	// still being published, however fast either side is.
	phase := func(i int) int32 { return int32(i * kills / total) }
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			single := w%2 == 0 // half the workers publish one by one
			for start := w * batch; start < total; start += workers * batch {
				for killsDone.Load() < phase(start) && ctx.Err() == nil {
					time.Sleep(5 * time.Millisecond)
				}
				var msgs []publisher.Message
				for i := start; i < start+batch && i < total; i++ {
					msgs = append(msgs, publisher.Message{Type: "load.test", Key: []any{i}, Body: []byte("payload")})
				}
				if single {
					for _, m := range msgs {
						if err := p.Publish(ctx, m); err != nil {
							errs <- err
							return
						}
					}
				} else if err := p.PublishBatch(ctx, msgs...); err != nil {
					errs <- err
					return
				}
				// Spread publishing over the kills; the one-by-one workers
				// keep messages in flight most of the time.
				if single {
					time.Sleep(20 * time.Millisecond)
				} else {
					time.Sleep(150 * time.Millisecond)
				}
			}
		}()
	}
	// Background publishers keep a message in flight at every kill, until
	// the last kill is done.
	var bgCount [2]int
	var bgWG sync.WaitGroup
	for b := range bgCount {
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			for i := 0; ; i++ {
				select {
				case <-killed:
					return
				default:
				}
				if err := p.Publish(ctx, publisher.Message{Type: "background", Key: []any{b, i}}); err != nil {
					t.Errorf("background publish: %v", err)
					return
				}
				bgCount[b] = i + 1
			}
		}()
	}
	wg.Wait()
	bgWG.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish under connection kills: %v", err)
	}
	<-killed
	if got := killsDone.Load(); got != kills {
		t.Fatalf("%d kills done, want %d", got, kills)
	}

	seen := make(map[string]int, total)
	for _, id := range drain(t, ch, q) {
		seen[id]++
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	missing := 0
	for i := range total {
		if seen[gen.MustID("load.test", i).String()] == 0 {
			missing++
		}
	}
	bg := 0
	for b, n := range bgCount {
		for i := range n {
			if seen[gen.MustID("background", b, i).String()] == 0 {
				missing++
			}
		}
		bg += n
	}
	retries := rabbitpub.Retries(p)
	t.Logf("%d+%d messages confirmed, %d distinct in the queue, %d duplicates, %d missing, after %d connection kills; %d messages were published again",
		total, bg, len(seen), dups, missing, kills, retries)
	if missing != 0 || len(seen) != total+bg {
		t.Fatalf("%d of %d messages missing (%d distinct in the queue)", missing, total+bg, len(seen))
	}
	if retries == 0 {
		t.Errorf("no message was published again: the kills missed every in-flight message")
	}
}
