package publisher_test

import (
	"bufio"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uuidforge/uuidforge/forge"
	"github.com/uuidforge/uuidforge/lineage"
	"github.com/uuidforge/uuidforge/publisher"
)

// specRow returns the worked-example table row of forge/SPEC.md (section Message IDs) that
// starts with "| step |".
func specRows(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../forge/SPEC.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| E") {
			rows[strings.Fields(line)[1]] = line
		}
	}
	return rows
}

// TestSpecWorkedExample recomputes the worked example of forge/SPEC.md (section Message IDs)
// and checks every value written there.
func TestSpecWorkedExample(t *testing.T) {
	rows := specRows(t)
	v5 := forge.MustNew("orders.example.com")
	keyed := forge.MustNew("orders.example.com", forge.WithSecret("example-secret-do-not-use"))
	if v5.Namespace().String() != "341c1770-d2ab-56be-98c6-765ed848c864" {
		t.Fatalf("namespace %s", v5.Namespace())
	}
	spec, _ := os.ReadFile("../forge/SPEC.md")
	contains := func(row, what, want string) {
		t.Helper()
		if !strings.Contains(row, "`"+want+"`") {
			t.Errorf("%s: %s %s not in %q", row[:4], what, want, row)
		}
	}
	e1 := publisher.Message{Type: "order.created", Key: []any{"o-1001"}, Body: []byte(`{"total":1234}`)}
	e2 := publisher.Message{Type: "invoice.requested", Key: []any{"o-1001", 1}}
	e3 := publisher.Message{Type: "audit.line", Body: []byte("hello")}
	for _, g := range []*forge.Generator{v5, keyed} {
		col := "v5"
		if g == keyed {
			col = "keyed"
		}
		ctx := context.Background()
		l1, err := publisher.IDs(ctx, g, &e1)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := publisher.IDs(lineage.NewContext(ctx, l1), g, &e2)
		if err != nil {
			t.Fatal(err)
		}
		l3, err := publisher.IDs(ctx, g, &e3)
		if err != nil {
			t.Fatal(err)
		}
		contains(rows["E1"], col+" ID", l1.MessageID.String())
		contains(rows["E2"], col+" ID", l2.MessageID.String())
		contains(rows["E3"], col+" ID", l3.MessageID.String())
		if l1.CorrelationID != l1.MessageID || l1.CausationID != uuid.Nil ||
			l2.CorrelationID != l1.MessageID || l2.CausationID != l1.MessageID ||
			l3.CorrelationID != l3.MessageID {
			t.Errorf("%s lineage: %+v %+v %+v", col, l1, l2, l3)
		}
		// The ID is the scheme applied to the documented name.
		for _, c := range []struct {
			l      lineage.Lineage
			parent uuid.UUID
			m      publisher.Message
		}{{l1, uuid.Nil, e1}, {l2, l1.MessageID, e2}, {l3, uuid.Nil, e3}} {
			name, err := forge.Canonical(publisher.Parts(c.parent, c.m.Type, c.m.Key, c.m.Body)...)
			if err != nil {
				t.Fatal(err)
			}
			if g.FromName(name) != c.l.MessageID {
				t.Errorf("%s: ID of name %s is not the message ID", col, name)
			}
			if col == "v5" && !strings.Contains(string(spec), "`"+strings.ReplaceAll(string(name), c.parent.String(), "<E1 ID>")+"`") &&
				!strings.Contains(string(spec), "`"+string(name)+"`") {
				t.Errorf("name %s not in the spec", name)
			}
		}
	}
	for _, c := range []struct {
		key  []any
		want string
	}{{e1.Key, "o-1001"}, {e2.Key, `["o-1001",1]`}} {
		k, err := publisher.KeyBytes(c.key)
		if err != nil || string(k) != c.want {
			t.Errorf("KeyBytes(%v) = %s, %v; want %s", c.key, k, err, c.want)
		}
		if !strings.Contains(string(spec), "`"+c.want+"`") {
			t.Errorf("record key %s not in the spec", c.want)
		}
	}
	if !strings.Contains(string(spec), "`"+lineage.HeaderCausationID+"`") {
		t.Error("causation header name not in the spec")
	}
}
