package pgname

import (
	"strings"
	"testing"
	"time"
)

func TestParseTable(t *testing.T) {
	for _, ok := range []string{"t", "s.t", "_x9", strings.Repeat("a", 63)} {
		if _, err := ParseTable(ok); err != nil {
			t.Errorf("ParseTable(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b.c", "9a", "a-b", `a"b`, "t; DROP TABLE x", strings.Repeat("a", 64), "s."} {
		if _, err := ParseTable(bad); err == nil {
			t.Errorf("ParseTable(%q) accepted", bad)
		}
	}
}

func TestAux(t *testing.T) {
	if got := Aux("orders", "idx"); got != "orders_idx" {
		t.Fatal(got)
	}
	long := strings.Repeat("a", 60)
	a, b := Aux(long+"x", "expires_idx"), Aux(long+"y", "expires_idx")
	if len(a) > 63 || len(b) > 63 || a == b || !strings.HasSuffix(a, "_expires_idx") {
		t.Fatalf("Aux of long names: %q, %q", a, b)
	}
}

func TestMicros(t *testing.T) {
	for d, want := range map[time.Duration]int64{0: 0, time.Nanosecond: 1, time.Microsecond: 1, 1500 * time.Nanosecond: 2, time.Second: 1e6} {
		if got := Micros(d); got != want {
			t.Errorf("Micros(%v) = %d, want %d", d, got, want)
		}
	}
}
