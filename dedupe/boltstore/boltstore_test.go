package boltstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/boltstore"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
)

func open(t testing.TB, path string, opts ...boltstore.Option) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(t *testing.T) dedupe.Store {
			return open(t, filepath.Join(t.TempDir(), "dedupe.db"))
		},
		Broken: func(t *testing.T) dedupe.Store {
			s := open(t, filepath.Join(t.TempDir(), "dedupe.db"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return s
		},
		Forever:     true,
		ErrorPrefix: "boltstore: ",
	})
}

// One store shared by every case, in one file, as a process would.
func TestConformanceShared(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "dedupe.db"), boltstore.WithCleanupInterval(50*time.Millisecond))
	dedupetest.Run(t, dedupetest.Options{
		NewStore: func(*testing.T) dedupe.Store { return s },
		Forever:  true,
	})
}

func claim(t *testing.T, s dedupe.Store, k dedupe.Key, lease time.Duration, want dedupe.Status) dedupe.Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), k, lease)
	if err != nil || c.Status != want {
		t.Fatalf("Claim(%s) = %s, %v; want %s", k, c.Status, err, want)
	}
	return c
}

func TestRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dedupe.db")
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	done, forever, held := dedupetest.NewKey("restart"), dedupetest.NewKey("restart"), dedupetest.NewKey("restart")
	c := claim(t, s, done, time.Minute, dedupe.Acquired)
	if err := s.Complete(ctx, c, time.Hour); err != nil {
		t.Fatal(err)
	}
	f := claim(t, s, forever, time.Minute, dedupe.Acquired)
	if err := s.Complete(ctx, f, dedupe.Forever); err != nil {
		t.Fatal(err)
	}
	h := claim(t, s, held, time.Minute, dedupe.Acquired)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, done, time.Minute); !errors.Is(err, dedupe.ErrClosed) {
		t.Fatalf("Claim after Close: %v", err)
	}

	s = open(t, path)
	claim(t, s, done, time.Minute, dedupe.Duplicate)
	claim(t, s, forever, time.Minute, dedupe.Duplicate)
	in := claim(t, s, held, time.Minute, dedupe.InFlight)
	if !in.Until.Equal(h.Until) {
		t.Fatalf("lease end after restart %v, want %v", in.Until, h.Until)
	}
	// The lease taken before the restart is still ours to complete.
	if err := s.Complete(ctx, h, 0); err != nil {
		t.Fatal(err)
	}
	claim(t, s, held, time.Minute, dedupe.Duplicate)
	// Tokens keep growing across restarts.
	n := claim(t, s, dedupetest.NewKey("restart"), time.Minute, dedupe.Acquired)
	if n.Token <= h.Token {
		t.Fatalf("token after restart %d, want > %d", n.Token, h.Token)
	}
}

func TestSecondOpener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedupe.db")
	open(t, path)
	start := time.Now()
	_, err := boltstore.Open(path, boltstore.WithOpenTimeout(100*time.Millisecond))
	if !errors.Is(err, boltstore.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open took %v", d)
	}
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	bad := []struct {
		option string
		o      boltstore.Option
	}{
		{"WithBucket", boltstore.WithBucket("")},
		{"WithDefaultLease", boltstore.WithDefaultLease(-time.Second)},
		{"WithDefaultRetention", boltstore.WithDefaultRetention(-2 * time.Second)},
		{"WithOpenTimeout", boltstore.WithOpenTimeout(0)},
		{"WithCleanupInterval", boltstore.WithCleanupInterval(0)},
		{"WithCleanupBatch", boltstore.WithCleanupBatch(0)},
	}
	for i, b := range bad {
		s, err := boltstore.Open(filepath.Join(dir, fmt.Sprint(i)), b.o)
		if err == nil {
			s.Close()
			t.Errorf("%s: Open accepted an invalid value", b.option)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "boltstore: "+b.option+"(") || strings.Count(msg, "boltstore:") != 1 {
			t.Errorf("%s: error %q does not start with %q", b.option, msg, "boltstore: "+b.option+"(")
		}
	}
	if _, err := boltstore.New(nil); err == nil {
		t.Error("New(nil) accepted")
	}
	// Options of the file Open opens are an error from New.
	db, err := bolt.Open(filepath.Join(dir, "db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, o := range []boltstore.Option{boltstore.WithNoSync(), boltstore.WithOpenTimeout(time.Second)} {
		if s, err := boltstore.New(db, o); err == nil {
			s.Close()
			t.Error("New accepted an option only Open can honour")
		}
	}
	s, err := boltstore.New(db, nil, boltstore.WithDefaultRetention(dedupe.Forever))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// New uses the caller's database, keeps independent stores in separate
// buckets and leaves the database open on Close.
func TestNew(t *testing.T) {
	ctx := context.Background()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "app.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := boltstore.New(db, boltstore.WithBucket("a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := boltstore.New(db, boltstore.WithBucket("b"))
	if err != nil {
		t.Fatal(err)
	}
	k := dedupetest.NewKey("new")
	c := claim(t, a, k, time.Minute, dedupe.Acquired)
	claim(t, b, k, time.Minute, dedupe.Acquired)
	if err := a.Complete(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	claim(t, b, k, time.Minute, dedupe.InFlight)
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("a")) == nil {
			return errors.New("bucket a missing")
		}
		return nil
	}); err != nil {
		t.Fatalf("db after the store's Close: %v", err)
	}
	b.Close()
}

// Cleanup deletes expired entries in several small transactions while claims
// go on, and keeps what is still live or kept forever.
func TestCleanup(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "dedupe.db"),
		boltstore.WithCleanupBatch(7), boltstore.WithCleanupInterval(time.Hour), boltstore.WithNoSync())
	const n = 100
	var claims []dedupe.Claim
	for i := range n {
		c := claim(t, s, dedupetest.NewKey("cleanup"), 20*time.Millisecond, dedupe.Acquired)
		if i%2 == 0 {
			if err := s.Complete(ctx, c, 20*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		claims = append(claims, c)
	}
	forever := claim(t, s, dedupetest.NewKey("cleanup"), time.Minute, dedupe.Acquired)
	if err := s.Complete(ctx, forever, dedupe.Forever); err != nil {
		t.Fatal(err)
	}
	live := claim(t, s, dedupetest.NewKey("cleanup"), time.Minute, dedupe.Acquired)
	time.Sleep(30 * time.Millisecond)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var during atomic.Int32
	wg.Go(func() { // claims are served while the cleanup runs
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := s.Claim(ctx, dedupetest.NewKey("during"), time.Minute)
			if err != nil || c.Status != dedupe.Acquired {
				t.Errorf("Claim during cleanup = %s, %v", c.Status, err)
				return
			}
			during.Add(1)
		}
	})
	deleted, err := s.Cleanup(ctx)
	close(stop)
	wg.Wait()
	if err != nil || deleted != n {
		t.Fatalf("Cleanup = %d, %v; want %d deleted", deleted, err, n)
	}
	if l, _ := s.Len(); l != 2+int(during.Load()) {
		t.Fatalf("Len = %d, want %d", l, 2+during.Load())
	}
	claim(t, s, forever.Key, time.Minute, dedupe.Duplicate)
	claim(t, s, live.Key, time.Minute, dedupe.InFlight)
	if err := s.Complete(ctx, claims[1], 0); !errors.Is(err, dedupe.ErrLeaseLost) {
		t.Fatalf("Complete of a cleaned-up lease: %v, want ErrLeaseLost", err)
	}
	claim(t, s, claims[0].Key, time.Minute, dedupe.Acquired)
}

func TestBackgroundCleanup(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "dedupe.db"), boltstore.WithCleanupInterval(10*time.Millisecond), boltstore.WithNoSync())
	for range 20 {
		claim(t, s, dedupetest.NewKey("bg"), 5*time.Millisecond, dedupe.Acquired)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := s.Len()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries left after the background cleanup", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The largest durations saturate instead of overflowing into the past.
func TestHugeDurations(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "dedupe.db"))
	k := dedupetest.NewKey("huge")
	c := claim(t, s, k, math.MaxInt64, dedupe.Acquired)
	claim(t, s, k, time.Minute, dedupe.InFlight)
	if err := s.Complete(ctx, c, math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	claim(t, s, k, time.Minute, dedupe.Duplicate)
	if n, err := s.Cleanup(ctx); err != nil || n != 0 {
		t.Fatalf("Cleanup = %d, %v; want nothing expired", n, err)
	}
}

// TestBucketsDoNotAlias: stores in one file never share a bucket, whatever
// their names. A store named "x" once used "x.expiry" as its expiry index,
// which was the record bucket of a store named "x.expiry": x's cleanup then
// deleted the other store's records, and keys completed Forever stopped being
// duplicates.
func TestBucketsDoNotAlias(t *testing.T) {
	ctx := context.Background()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "app.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	names := []string{"x", "x.expiry", "x.expiry.expiry", "x.records", "dedupe"}
	stores := make([]*boltstore.Store, len(names))
	for i, n := range names {
		if stores[i], err = boltstore.New(db, boltstore.WithBucket(n)); err != nil {
			t.Fatalf("New(WithBucket(%q)): %v", n, err)
		}
		defer stores[i].Close()
	}
	// IDs whose first bytes are small: read as an expiry time, they are in
	// the past, so an aliasing cleanup deletes every one of them.
	key := func(i, j int) dedupe.Key {
		id := uuid.UUID{15: byte(j + 1), 14: byte(i + 1)}
		return dedupe.Key{Scope: "alias", ID: id}
	}
	const perStore = 20
	for i, s := range stores {
		for j := range perStore {
			c := claim(t, s, key(i, j), time.Minute, dedupe.Acquired)
			if err := s.Complete(ctx, c, dedupe.Forever); err != nil {
				t.Fatal(err)
			}
		}
		// An expired lease, so that every store's cleanup has work to do.
		claim(t, s, dedupetest.NewKey("alias"), time.Millisecond, dedupe.Acquired)
	}
	time.Sleep(5 * time.Millisecond)
	for i, s := range stores {
		if _, err := s.Cleanup(ctx); err != nil {
			t.Fatalf("%q: Cleanup: %v", names[i], err)
		}
	}
	for i, s := range stores {
		lost := 0
		for j := range perStore {
			c, err := s.Claim(ctx, key(i, j), time.Minute)
			if err != nil {
				t.Fatalf("%q: Claim: %v", names[i], err)
			}
			if c.Status != dedupe.Duplicate {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("store %q: %d of %d keys completed Forever are no longer duplicates", names[i], lost, perStore)
		}
	}
}

// TestOldLayout: a file written by the flat layout (records directly in the
// named bucket, the expiry index in "<name>.expiry") is refused with
// ErrLayout and left as it was; so is another program's bucket of that name.
func TestOldLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	rk := append(id[:], "billing"...)
	rec := make([]byte, 17)
	rec[0] = 2 // done
	binary.BigEndian.PutUint64(rec[1:], 1)
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte(boltstore.DefaultBucket))
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket([]byte(boltstore.DefaultBucket + ".expiry")); err != nil {
			return err
		}
		if _, err := tx.CreateBucket([]byte("empty")); err != nil {
			return err
		}
		return b.Put(rk, rec)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := boltstore.New(db); !errors.Is(err, boltstore.ErrLayout) {
		t.Fatalf("New on an old-layout bucket: %v, want ErrLayout", err)
	}
	// An empty bucket of that name is adopted.
	s, err := boltstore.New(db, boltstore.WithBucket("empty"))
	if err != nil {
		t.Fatalf("New on an empty bucket: %v", err)
	}
	s.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(boltstore.DefaultBucket)).Get(rk); !bytes.Equal(v, rec) {
			return fmt.Errorf("old record changed: %x", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := boltstore.Open(path); !errors.Is(err, boltstore.ErrLayout) {
		t.Fatalf("Open of an old-layout file: %v, want ErrLayout", err)
	}
	// Open released the file after refusing it.
	s = open(t, path, boltstore.WithBucket("dedupe2"))
	claim(t, s, dedupe.Key{Scope: "billing", ID: id}, time.Minute, dedupe.Acquired)
}

// TestLayout reads and writes the file layout the package doc specifies: a
// record written by hand is honoured, and the store's own records decode as
// documented.
func TestLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "layout.db")
	s := open(t, path, boltstore.WithBucket("spec"))
	ctx := context.Background()
	held := claim(t, s, dedupetest.NewKey("spec"), time.Hour, dedupe.Acquired)
	done := claim(t, s, dedupetest.NewKey("spec"), time.Hour, dedupe.Acquired)
	if err := s.Complete(ctx, done, dedupe.Forever); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	handID := uuid.New()
	until := time.Now().Add(time.Hour).UnixNano()
	err = db.Update(func(tx *bolt.Tx) error {
		top := tx.Bucket([]byte("spec"))
		if top == nil {
			return errors.New("no top-level bucket named after the store")
		}
		if v := string(top.Get([]byte("layout"))); v != "uuidforge-dedupe/2" {
			return fmt.Errorf("layout marker %q", v)
		}
		recs, exp := top.Bucket([]byte("records")), top.Bucket([]byte("expiry"))
		if recs == nil || exp == nil {
			return errors.New("records or expiry bucket missing")
		}
		rkey := func(k dedupe.Key) []byte { return append(k.ID[:], k.Scope...) }
		check := func(k dedupe.Key, state byte, token uint64, until int64) error {
			v := recs.Get(rkey(k))
			if len(v) != 17 || v[0] != state || binary.BigEndian.Uint64(v[1:]) != token || int64(binary.BigEndian.Uint64(v[9:])) != until {
				return fmt.Errorf("record of %s = %x", k, v)
			}
			if until != 0 {
				ek := binary.BigEndian.AppendUint64(nil, uint64(until))
				if exp.Get(append(ek, rkey(k)...)) == nil {
					return fmt.Errorf("no expiry entry for %s", k)
				}
			}
			return nil
		}
		if err := check(held.Key, 1, held.Token, held.Until.UnixNano()); err != nil {
			return err
		}
		if err := check(done.Key, 2, done.Token, 0); err != nil {
			return err
		}
		rec := []byte{2}
		rec = binary.BigEndian.AppendUint64(rec, 7)
		rec = binary.BigEndian.AppendUint64(rec, uint64(until))
		k := dedupe.Key{Scope: "spec", ID: handID}
		if err := recs.Put(rkey(k), rec); err != nil {
			return err
		}
		return exp.Put(append(binary.BigEndian.AppendUint64(nil, uint64(until)), rkey(k)...), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = open(t, path, boltstore.WithBucket("spec"))
	d := claim(t, s, dedupe.Key{Scope: "spec", ID: handID}, time.Minute, dedupe.Duplicate)
	if d.Until.UnixNano() != until {
		t.Fatalf("Duplicate.Until = %v, want %v", d.Until, time.Unix(0, until))
	}
}

// FuzzRecord: whatever bytes a record holds in the file (a damaged or
// foreign value), the store answers with an error or a valid claim, never
// panics, and never answers duplicate for a value that is not a done record.
func FuzzRecord(f *testing.F) {
	done := []byte{2}
	done = binary.BigEndian.AppendUint64(done, 7)
	done = binary.BigEndian.AppendUint64(done, 0)
	f.Add(done)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Add([]byte{3, 1, 2})
	f.Add(make([]byte, 17))
	// An unknown state whose end has passed: a claim takes it over.
	f.Add([]byte("000000000\x000000000"))
	dir := f.TempDir()
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, v []byte) {
		path := filepath.Join(dir, fmt.Sprintf("fuzz%d.db", n.Add(1)))
		s := open(t, path, boltstore.WithBucket("fuzz"))
		key := dedupetest.NewKey("fuzz")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("fuzz")).Bucket([]byte("records")).Put(append(key.ID[:], key.Scope...), v)
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s = open(t, path, boltstore.WithBucket("fuzz"))
		ctx := context.Background()
		valid := len(v) == 17 && (v[0] == 1 || v[0] == 2)
		r, err := s.Inspect(ctx, key)
		switch {
		case err != nil && valid:
			t.Fatalf("Inspect of a well-formed record %x: %v", v, err)
		case err == nil && !valid:
			t.Fatalf("Inspect of %x = %v, want an error", v, r)
		case valid && (int(r.State) != int(v[0]) || r.Token != binary.BigEndian.Uint64(v[1:9])):
			t.Fatalf("Inspect of %x = %v", v, r)
		}
		c, claimErr := s.Claim(ctx, key, time.Minute)
		switch err := claimErr; {
		case err != nil && valid:
			t.Fatalf("Claim over a well-formed record %x: %v", v, err)
		case err == nil && c.Status == dedupe.Duplicate && (!valid || v[0] != 2):
			t.Fatalf("Claim over %x answered duplicate", v)
		}
		if _, err := s.Cleanup(ctx); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if _, err := s.ClaimBatch(ctx, []dedupe.Key{key, key}, time.Minute); err != nil && valid {
			t.Fatalf("ClaimBatch over a well-formed record %x: %v", v, err)
		}
		// A claim replaced the record unless it failed on it.
		if _, err := s.Forget(ctx, key, true); (err == nil) != (claimErr == nil) {
			t.Fatalf("Forget(force) over the record %x: %v (the claim: %v)", v, err, claimErr)
		}
	})
}
