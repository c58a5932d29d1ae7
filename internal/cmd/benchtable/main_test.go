package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
pkg: github.com/uuidforge/uuidforge/forge
BenchmarkID/short-string-2         	 7000000	       150.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkBaseline/short-string-2   	 4000000	       300.0 ns/op	     152 B/op	       3 allocs/op
pkg: github.com/uuidforge/uuidforge/publisher
BenchmarkKafka/single/raw-2        	   20000	     50000 ns/op	     20000 msgs/s
BenchmarkKafka/single/ours-2       	   20000	     52000 ns/op	     19000 msgs/s
BenchmarkKafka/single/ours-2       	   20000	     52000 ns/op	     21000 msgs/s
BenchmarkKafka/single/ours-2       	   20000	     52000 ns/op	     40000 msgs/s
BenchmarkKafkaInterleaved/single-2 	   20000	     52000 ns/op	  10000 ours-msgs/s	  12500 raw-msgs/s	 0.8 ours/raw
pkg: github.com/uuidforge/uuidforge/consumer/rabbitsub
BenchmarkConsumeSideBySide-2       	       3	  52000 ns/op	  9000 dedupe-msgs/s	  10000 plain-msgs/s	 10 slowdown-%
BenchmarkConsumeSideBySide/dedupe-redis-2   	       5	  52000 ns/op	  20000 ours-msgs/s	 0.8000 ratio	  25000 raw-msgs/s
BenchmarkConsumeSideBySide/inbox-postgres-2 	       5	  52000 ns/op	  12000 ours-msgs/s	 0.5000 ratio	  24000 raw-msgs/s
BenchmarkConsumeSideBySide/inbox-postgres-2 	       5	  52000 ns/op	  14000 ours-msgs/s	 0.5000 ratio	  26000 raw-msgs/s
pkg: github.com/uuidforge/uuidforge/dedupe/redisstore
BenchmarkClaimComplete-2           	   20000	     52000 ns/op	  15000 pairs/s	 1.000 rt/claim	 1.000 rt/complete
pkg: github.com/uuidforge/uuidforge/bench
BenchmarkDedupe/unique/uuidforge-2 	 1000000	      1000 ns/op	 1000000 msgs/s
BenchmarkDedupe/unique/watermill-uuid-key-2 	 1000000	      1000 ns/op	 500000 msgs/s
`

func TestRows(t *testing.T) {
	results, order, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]row{}
	for _, r := range rows(results, order) {
		got[r.what] = r
	}
	check := func(what string, ours, base float64) {
		t.Helper()
		r, ok := got[what]
		if !ok {
			t.Fatalf("no row %q in %v", what, got)
		}
		if r.ours != ours || r.base != base {
			t.Errorf("%s: ours %v base %v, want %v and %v", what, r.ours, r.base, ours, base)
		}
	}
	check("forge.BenchmarkID/short-string", 1e9/150, 1e9/300)
	check("publisher.BenchmarkKafka/single/ours", 21000, 20000) // median of three runs
	check("publisher.BenchmarkKafkaInterleaved/single (interleaved)", 10000, 12500)
	check("bench.BenchmarkDedupe/unique/uuidforge", 1e6, 5e5)
	check("consumer/rabbitsub.BenchmarkConsumeSideBySide (interleaved)", 9000, 10000)
	check("consumer/rabbitsub.BenchmarkConsumeSideBySide/dedupe-redis (interleaved)", 20000, 25000)
	check("consumer/rabbitsub.BenchmarkConsumeSideBySide/inbox-postgres (interleaved)", 13000, 25000) // medians of two runs
	check("dedupe/redisstore.BenchmarkClaimComplete (round trips: 1.00/claim, 1.00/complete)", 15000, 0)
	if len(got) != 8 {
		t.Errorf("got %d rows, want 8: %v", len(got), got)
	}
	if r := got["consumer/rabbitsub.BenchmarkConsumeSideBySide/dedupe-redis (interleaved)"]; r.baseName != "raw" {
		t.Errorf("the RabbitMQ consumer's baseline is %q, want raw", r.baseName)
	}
}

func TestNoInput(t *testing.T) {
	results, order, err := parse(strings.NewReader("PASS\nok x 1s\n"))
	if err != nil || len(rows(results, order)) != 0 {
		t.Fatalf("rows from no benchmarks: %v %v", rows(results, order), err)
	}
}
