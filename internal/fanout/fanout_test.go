package fanout_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/uuidforge/uuidforge/internal/fanout"
)

type named string

func (n named) String() string { return string(n) }

type list []fmt.Stringer

func (l list) String() string { return fmt.Sprint([]fmt.Stringer(l)) }

func TestFlatten(t *testing.T) {
	got := fanout.Flatten[fmt.Stringer, list]([]fmt.Stringer{nil, named("a"), list{named("b"), named("c")}, nil, named("d")})
	var names []string
	for _, o := range got {
		names = append(names, o.String())
	}
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(names, want) {
		t.Fatalf("Flatten = %v, want %v", names, want)
	}
	if got := fanout.Flatten[fmt.Stringer, list]([]fmt.Stringer{nil, nil}); len(got) != 0 {
		t.Fatalf("Flatten of nils = %v, want none", got)
	}
}
