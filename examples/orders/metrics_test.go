package main

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP uuidforge_consumer_duplicates_total Deliveries skipped as duplicates.
# TYPE uuidforge_consumer_duplicates_total counter
uuidforge_consumer_duplicates_total{messaging_consumer_group_name="billing",messaging_destination_name="q",messaging_system="rabbitmq"} 2
uuidforge_consumer_duplicates_total{messaging_consumer_group_name="receipts",messaging_destination_name="a \"quoted\" \\ name",messaging_system="kafka"} 1
uuidforge_outbox_backlog 3
not a sample
`
	m := parseMetrics(text)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"uuidforge_consumer_duplicates_total", nil, 3},
		{"uuidforge_consumer_duplicates_total", []string{"messaging_consumer_group_name", "billing"}, 2},
		{"uuidforge_consumer_duplicates_total", []string{"messaging_destination_name", `a "quoted" \ name`}, 1},
		{"uuidforge_consumer_duplicates_total", []string{"messaging_system", "kafka", "messaging_consumer_group_name", "billing"}, 0},
		{"uuidforge_outbox_backlog", nil, 3},
		{"missing", nil, 0},
	} {
		if got := m.sum(c.name, c.labels...); got != c.want {
			t.Errorf("sum(%s, %q) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// FuzzParseMetrics writes one sample in the Prometheus text format, with
// the label value escaped as the exporter escapes it, and reads it back.
func FuzzParseMetrics(f *testing.F) {
	f.Add("messaging_client_sent_messages_total", "messaging_system", "rabbitmq", 3.0)
	f.Add("m", "l", `a "b" \ c`+"\n", -1.5)
	f.Add("m:x", "l_2", "} 1", math.Inf(1))
	f.Fuzz(func(t *testing.T, name, label, value string, v float64) {
		if !metricName.MatchString(name) || !metricName.MatchString(label) || strings.Contains(label, ":") ||
			!utf8.ValidString(value) || math.IsNaN(v) {
			return // not a sample the exporter writes
		}
		escaped := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(value)
		line := name + `{` + label + `="` + escaped + `"} ` + strconv.FormatFloat(v, 'g', -1, 64)
		m := parseMetrics(line)
		if len(m[name]) != 1 {
			t.Fatalf("parseMetrics(%q) = %v, want one sample of %s", line, m, name)
		}
		s := m[name][0]
		if s.value != v || s.labels[label] != value {
			t.Fatalf("parseMetrics(%q): value %v labels %q, want %v and %s=%q", line, s.value, s.labels, v, label, value)
		}
	})
}
