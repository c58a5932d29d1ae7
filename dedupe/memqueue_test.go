package dedupe

import "testing"

func TestMemQueue(t *testing.T) {
	item := func(i int) memDone { return memDone{key: memKey{scope: 1}, token: uint64(i)} }
	tests := []struct {
		name      string
		push, pop int
		keep      func(uint64) bool
	}{
		{"empty", 0, 0, func(uint64) bool { return true }},
		{"one block", 10, 3, func(t uint64) bool { return t%2 == 0 }},
		{"block boundary", memBlockLen, 0, func(uint64) bool { return true }},
		{"several blocks, keep none", 3*memBlockLen + 7, memBlockLen + 1, func(uint64) bool { return false }},
		{"several blocks, keep some", 5*memBlockLen + 1, 2 * memBlockLen, func(t uint64) bool { return t%7 != 0 }},
		{"popped to empty", 300, 300, func(uint64) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q memQueue
			var want []uint64
			for i := 1; i <= tt.push; i++ {
				q.push(item(i))
				want = append(want, uint64(i))
			}
			for range tt.pop {
				d, ok := q.pop()
				if !ok || d.token != want[0] {
					t.Fatalf("pop = %d, %v; want %d", d.token, ok, want[0])
				}
				want = want[1:]
			}
			q.filter(func(d memDone) bool { return tt.keep(d.token) })
			kept := want[:0]
			for _, w := range want {
				if tt.keep(w) {
					kept = append(kept, w)
				}
			}
			// The queue still works after filtering: push more, drain all.
			for i := 0; i < memBlockLen+3; i++ {
				q.push(item(1_000_000 + i))
				kept = append(kept, uint64(1_000_000+i))
			}
			if q.len() != len(kept) {
				t.Fatalf("len = %d, want %d", q.len(), len(kept))
			}
			for _, w := range kept {
				if p, ok := q.peek(); !ok || p.token != w {
					t.Fatalf("peek = %d, %v; want %d", p.token, ok, w)
				}
				if d, ok := q.pop(); !ok || d.token != w {
					t.Fatalf("pop = %d, %v; want %d", d.token, ok, w)
				}
			}
			if _, ok := q.pop(); ok || q.len() != 0 {
				t.Fatal("queue not empty after draining")
			}
		})
	}
}
