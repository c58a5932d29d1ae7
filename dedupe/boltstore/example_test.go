package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
)

// A completed message stays a duplicate after the process restarts.
func ExampleOpen() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "boltstore-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "dedupe.db")
	key := dedupe.Key{Scope: "billing", ID: uuid.MustParse("2ed6657d-e927-568b-95e1-2665a8aea6a2")}

	store, err := boltstore.Open(path, boltstore.WithDefaultRetention(dedupe.Forever))
	if err != nil {
		panic(err)
	}
	c, _ := store.Claim(ctx, key, 30*time.Second)
	fmt.Println("first run:", c.Status)
	if err := store.Complete(ctx, c, 0); err != nil { // 0: the store's default, Forever here
		panic(err)
	}

	// While the file is open, nobody else can open it.
	_, err = boltstore.Open(path, boltstore.WithOpenTimeout(50*time.Millisecond))
	fmt.Println("second opener locked out:", errors.Is(err, boltstore.ErrLocked))
	store.Close()

	store, err = boltstore.Open(path)
	if err != nil {
		panic(err)
	}
	defer store.Close()
	again, _ := store.Claim(ctx, key, 30*time.Second)
	fmt.Println("after restart:", again.Status)
	// Output:
	// first run: acquired
	// second opener locked out: true
	// after restart: duplicate
}
