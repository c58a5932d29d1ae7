package kafkapub_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/publisher/kafkapub"
)

// No formatting of a Publisher shows its SASL password.
func TestPasswordNeverPrinted(t *testing.T) {
	p, err := kafkapub.New([]string{"127.0.0.1:9092"}, "orders", forge.MustNew("ns"),
		kafkapub.WithSASL(plain.Mechanism{Username: "u", Password: "S3CRET"}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	holder := struct{ p *kafkapub.Publisher }{p}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		for _, v := range []any{p, holder} {
			if got := fmt.Sprintf(verb, v); strings.Contains(got, "S3CRET") || strings.Contains(got, "53334352455") {
				t.Fatalf("%s shows the password: %s", verb, got)
			}
		}
	}
}
