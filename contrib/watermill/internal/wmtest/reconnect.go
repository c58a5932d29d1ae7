package wmtest

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/subscriber"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
)

// Command returns a function that runs the command line cmd.
func Command(cmd []string) func() error {
	return func() error {
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		return c.Run()
	}
}

// Reconnect is Watermill's TestReconnect without its data race. The
// suite's own (Watermill v1.5.1, test_pubsub.go) appends to its slice of
// published messages in one goroutine (lines 1084-1086) and compares it
// with the received ones in another (line 1120) without synchronisation:
// when the Pub/Sub delivers the last messages before that goroutine has
// appended them, it reports them "received but not sent" (seen here on
// RabbitMQ without the race detector: "received: 10000, sent: 9998"), and
// under -race it fails on any Pub/Sub. So the suites here leave
// RestartServiceCommand empty, which skips it, and run this instead: 100
// publishers publish 10 000 messages to a new topic (each one again after a
// failed attempt, some after a pause of 500 ms) while restart runs twice,
// after a third and after half of them; every message must then be
// received. With exactlyOnce, the messages are read without deduplication,
// so a message received twice fails the test too.
func Reconnect(t *testing.T, newPubSub tests.PubSubConstructor, restart func() error, exactlyOnce bool) {
	const (
		messagesCount   = 10000
		publishersCount = 100
	)
	pub, sub := newPubSub(t)
	topic := "topic-" + watermill.NewUUID()
	if si, ok := sub.(message.SubscribeInitializer); ok {
		if err := si.SubscribeInitialize(topic); err != nil {
			t.Fatal(err)
		}
	}
	messages, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu        sync.Mutex
		published message.Messages
		pubs      sync.WaitGroup
		restarts  sync.WaitGroup
	)
	next := make(chan struct{})
	go func() {
		for i := range messagesCount {
			next <- struct{}{}
			if i == messagesCount/3 || i == messagesCount/2 {
				restarts.Add(1)
				go func() {
					defer restarts.Done()
					if err := restart(); err != nil {
						t.Errorf("restart: %v", err)
					}
				}()
			}
		}
		close(next)
	}()
	for range publishersCount {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for range next {
				msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
				for {
					if rand.IntN(10) == 0 {
						time.Sleep(500 * time.Millisecond)
					}
					if err := pub.Publish(topic, msg); err == nil {
						break
					}
					time.Sleep(500 * time.Millisecond)
				}
				mu.Lock()
				published = append(published, msg)
				mu.Unlock()
			}
		}()
	}

	var received message.Messages
	var all bool
	if exactlyOnce {
		received, all = subscriber.BulkRead(messages, messagesCount, 2*time.Minute)
	} else {
		received, all = subscriber.BulkReadWithDeduplication(messages, messagesCount, 2*time.Minute)
	}
	pubs.Wait()
	restarts.Wait()
	if !all {
		t.Errorf("not all messages received (%d of %d)", len(received), messagesCount)
	}
	tests.AssertAllMessagesReceived(t, published, received)
	if exactlyOnce {
		// Anything delivered after the last expected message is a copy.
		select {
		case m, ok := <-messages:
			if ok {
				t.Errorf("message %s received again", m.UUID)
			}
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err := pub.Close(); err != nil {
		t.Error(err)
	}
	if err := sub.Close(); err != nil {
		t.Error(err)
	}
}
