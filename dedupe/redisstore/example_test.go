package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
)

// A consumer that processes each message once across all its replicas.
// (Compile-only: it needs a Redis server.)
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer rdb.Close()

	store, err := redisstore.New(rdb,
		redisstore.WithPrefix("billing:dedupe:"),
		redisstore.WithDefaultRetention(7*24*time.Hour),
	)
	if err != nil {
		log.Fatal(err)
	}

	msgID := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	c, err := store.Claim(ctx, dedupe.Key{Scope: "billing", ID: msgID}, 30*time.Second)
	switch {
	case err != nil:
		log.Print(err) // do not ack: the broker redelivers
		return
	case c.Status == dedupe.Duplicate:
		return // ack without processing
	case c.Status == dedupe.InFlight:
		return // neither ack nor drop: retry after c.Until
	}
	if err := handle(ctx); err != nil {
		_ = store.Release(ctx, c)
		return
	}
	if err := store.Complete(ctx, c, 0); errors.Is(err, dedupe.ErrLeaseLost) {
		log.Print("lease lost: someone else took over; do not ack")
	}
}

// On Redis Cluster the same store works unchanged: each record lives on the
// slot of its "{scope/ID}" hash tag.
func ExampleNew_cluster() {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"10.0.0.1:6379", "10.0.0.2:6379"}})
	defer rdb.Close()
	store, err := redisstore.New(rdb, redisstore.WithDefaultRetention(dedupe.Forever))
	if err != nil {
		log.Fatal(err)
	}
	_ = store
}

// Behind Sentinel, with completions acknowledged only once the primary's
// replica holds them, so that a failover never forgets a message that was
// acknowledged. (Compile-only: it needs Redis with Sentinel.)
func ExampleWithReplicaAcks() {
	ctx := context.Background()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    "mymaster",
		SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"},
	})
	defer rdb.Close()
	store, err := redisstore.New(rdb, redisstore.WithReplicaAcks(1, 500*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	c, err := store.Claim(ctx, dedupe.Key{Scope: "billing", ID: uuid.New()}, 30*time.Second)
	if err != nil || !c.Acquired() {
		return
	}
	if err := store.Complete(ctx, c, 0); errors.Is(err, redisstore.ErrNotReplicated) {
		log.Print("not replicated in time: do not ack; the redelivery is a duplicate or runs again")
	}
}

// Where a key's record lives. New does no I/O, so this runs without a server.
func ExampleStore_RedisKey() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	store, err := redisstore.New(rdb)
	if err != nil {
		log.Fatal(err)
	}
	id := uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	fmt.Println(store.RedisKey(dedupe.Key{Scope: "billing", ID: id}))
	// Output: uuidforge:dedupe:{billing/6ba7b810-9dad-11d1-80b4-00c04fd430c8}
}

func handle(context.Context) error { return nil }
