package forge

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

type benchOrder struct {
	SKU      string `json:"sku"`
	Qty      int    `json:"qty"`
	Customer string `json:"customer"`
}

var benchSink uuid.UUID

// BenchmarkID measures Generator.ID under the default scheme.
func BenchmarkID(b *testing.B) {
	g := MustNew("users")
	b.Run("short-string", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			u, err := g.ID("john@example.com")
			if err != nil {
				b.Fatal(err)
			}
			benchSink = u
		}
	})
	b.Run("short-string-runtime", func(b *testing.B) {
		// A string built at run time: boxing it into the ...any argument
		// costs the caller one allocation that a constant does not.
		email := strings.Repeat("j", 1) + "ohn@example.com"
		b.ReportAllocs()
		for b.Loop() {
			u, err := g.ID(email)
			if err != nil {
				b.Fatal(err)
			}
			benchSink = u
		}
	})
	b.Run("small-struct", func(b *testing.B) {
		o := benchOrder{SKU: "A-1", Qty: 2, Customer: "c-42"}
		b.ReportAllocs()
		for b.Loop() {
			u, err := g.ID(o)
			if err != nil {
				b.Fatal(err)
			}
			benchSink = u
		}
	})
	b.Run("keyed-short-string", func(b *testing.B) {
		k := MustNew("users", WithSecret("bench-secret-0123456789"))
		b.ReportAllocs()
		for b.Loop() {
			u, err := k.ID("john@example.com")
			if err != nil {
				b.Fatal(err)
			}
			benchSink = u
		}
	})
}

// BenchmarkBaseline is uuid.NewSHA1 over the precomputed names of the
// BenchmarkID cases: the floor that canonical encoding adds to.
func BenchmarkBaseline(b *testing.B) {
	g := MustNew("users")
	for _, c := range []struct {
		name string
		part any
	}{
		{"short-string", "john@example.com"},
		{"small-struct", benchOrder{SKU: "A-1", Qty: 2, Customer: "c-42"}},
	} {
		name, err := Canonical(c.part)
		if err != nil {
			b.Fatal(err)
		}
		ns := g.Namespace()
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				benchSink = uuid.NewSHA1(ns, name)
			}
		})
	}
}
