package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
)

// The protocol on the memory store: the first claim acquires, a concurrent
// one is in flight, and after Complete the message is a duplicate.
func ExampleMemory() {
	ctx := context.Background()
	store, err := dedupe.NewMemory()
	if err != nil {
		panic(err)
	}
	defer store.Close()

	key := dedupe.Key{Scope: "billing", ID: uuid.MustParse("2ed6657d-e927-568b-95e1-2665a8aea6a2")}

	c, err := store.Claim(ctx, key, 30*time.Second)
	if err != nil {
		panic(err)
	}
	fmt.Println("first claim:", c.Status)

	other, _ := store.Claim(ctx, key, 30*time.Second)
	fmt.Println("while processing:", other.Status)

	if err := store.Complete(ctx, c, time.Hour); err != nil {
		panic(err)
	}
	again, _ := store.Claim(ctx, key, 30*time.Second)
	fmt.Println("redelivery:", again.Status)

	// Another consumer (scope) of the same message processes it too.
	audit, _ := store.Claim(ctx, dedupe.Key{Scope: "audit", ID: key.ID}, 30*time.Second)
	fmt.Println("other scope:", audit.Status)
	// Output:
	// first claim: acquired
	// while processing: in flight
	// redelivery: duplicate
	// other scope: acquired
}

// A failing handler releases its claim, so the redelivery is processed
// instead of being dropped as a duplicate.
func ExampleMemory_Release() {
	ctx := context.Background()
	store, err := dedupe.NewMemory()
	if err != nil {
		panic(err)
	}
	defer store.Close()
	key := dedupe.Key{Scope: "billing", ID: uuid.MustParse("5c146b14-3c52-8afd-938a-375d0df1fbf6")}

	c, _ := store.Claim(ctx, key, 30*time.Second)
	handlerErr := errors.New("payment service down")
	if handlerErr != nil {
		if err := store.Release(ctx, c); err != nil {
			panic(err)
		}
	}
	retry, _ := store.Claim(ctx, key, 30*time.Second)
	fmt.Println("redelivery:", retry.Status, retry.Token > c.Token)

	// The first attempt's claim is stale now.
	err = store.Complete(ctx, c, 0)
	fmt.Println("stale complete:", errors.Is(err, dedupe.ErrLeaseLost))
	// Output:
	// redelivery: acquired true
	// stale complete: true
}

// A lease that expires (a crashed consumer) is claimable by anyone; the old
// holder can no longer complete.
func ExampleMemory_leaseExpiry() {
	ctx := context.Background()
	store, err := dedupe.NewMemory()
	if err != nil {
		panic(err)
	}
	defer store.Close()
	key := dedupe.Key{Scope: "billing", ID: uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")}

	crashed, _ := store.Claim(ctx, key, 10*time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	next, _ := store.Claim(ctx, key, time.Minute)
	fmt.Println("after expiry:", next.Status)
	fmt.Println("old holder:", errors.Is(store.Complete(ctx, crashed, 0), dedupe.ErrLeaseLost))
	fmt.Println("new holder:", store.Complete(ctx, next, 0))
	// Output:
	// after expiry: acquired
	// old holder: true
	// new holder: <nil>
}

// A bounded store never evicts a live lease: when only live leases remain, a
// new key gets ErrFull and the message is retried later.
func ExampleWithMaxEntries() {
	ctx := context.Background()
	store, err := dedupe.NewMemory(dedupe.WithMaxEntries(2))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	key := func(n byte) dedupe.Key { return dedupe.Key{Scope: "s", ID: uuid.UUID{15: n}} }

	a, _ := store.Claim(ctx, key(1), time.Minute)
	store.Claim(ctx, key(2), time.Minute)
	_, err = store.Claim(ctx, key(3), time.Minute)
	fmt.Println("full of leases:", errors.Is(err, dedupe.ErrFull))

	store.Complete(ctx, a, dedupe.Forever) // completed keys can be evicted
	c, _ := store.Claim(ctx, key(3), time.Minute)
	fmt.Println("after a completion:", c.Status)
	// Output:
	// full of leases: true
	// after a completion: acquired
}

// An operator lets one message be processed again: Inspect shows the key's
// record, Forget deletes it (a live lease only with force), and the next
// delivery acquires with a larger fencing token.
func ExampleAdmin() {
	ctx := context.Background()
	store, err := dedupe.NewMemory()
	if err != nil {
		panic(err)
	}
	defer store.Close()
	var admin dedupe.Admin = store

	key := dedupe.Key{Scope: "billing", ID: uuid.MustParse("2ed6657d-e927-568b-95e1-2665a8aea6a2")}
	c, _ := store.Claim(ctx, key, 30*time.Second)

	_, err = admin.Forget(ctx, key, false)
	fmt.Println("forget while processing:", errors.Is(err, dedupe.ErrLeaseHeld))

	_ = store.Complete(ctx, c, dedupe.Forever)
	r, _ := admin.Inspect(ctx, key)
	fmt.Println("inspect:", r)

	r, _ = admin.Forget(ctx, key, false)
	fmt.Println("forgot:", r)

	again, _ := store.Claim(ctx, key, 30*time.Second)
	fmt.Println("redelivery:", again.Status, "token", again.Token)
	// Output:
	// forget while processing: true
	// inspect: done forever (token 1)
	// forgot: done forever (token 1)
	// redelivery: acquired token 2
}
