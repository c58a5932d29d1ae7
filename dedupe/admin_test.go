package dedupe_test

import (
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/dedupe"
)

func TestRecordString(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 500, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		r             dedupe.Record
		want          string
		forever, live bool
	}{
		{dedupe.Record{}, "absent", false, false},
		{dedupe.Record{State: dedupe.Leased, Token: 7, Until: at}, "leased until 2026-05-01T10:00:00.0000005Z (token 7)", false, true},
		{dedupe.Record{State: dedupe.Leased, Token: 7, Until: at, Expired: true}, "leased until 2026-05-01T10:00:00.0000005Z (token 7, expired)", false, false},
		{dedupe.Record{State: dedupe.Done, Token: 8, Until: at}, "done until 2026-05-01T10:00:00.0000005Z (token 8)", false, false},
		{dedupe.Record{State: dedupe.Done, Token: 8}, "done forever (token 8)", true, false},
		{dedupe.Record{State: dedupe.Released, Token: 9}, "released (token 9)", false, false},
		{dedupe.Record{State: 9, Token: 1}, "State(9) (token 1)", false, false},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
		if tc.r.Forever() != tc.forever || tc.r.Live() != tc.live {
			t.Errorf("%v: Forever() = %v, Live() = %v; want %v, %v", tc.r, tc.r.Forever(), tc.r.Live(), tc.forever, tc.live)
		}
	}
}
