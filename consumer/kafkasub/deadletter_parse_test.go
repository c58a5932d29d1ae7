package kafkasub

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/lineage"
)

// ParseDeadLetter gives back what deadLetterRecord wrote, in each form: the
// original's location, reason and attempts, its headers without the
// dead-letter ones (in order, repeated keys kept), and what was omitted.
func TestParseDeadLetterRoundTrip(t *testing.T) {
	rec := kafkago.Message{Topic: "orders", Partition: 2, Offset: 41, Key: []byte("k"), Value: []byte("body"),
		Time: time.Unix(1700000000, 0),
		Headers: []kafkago.Header{
			{Key: lineage.HeaderMessageID, Value: []byte("6c7bc462-4987-5526-bfae-9c4efe86ec53")},
			{Key: "tenant", Value: []byte("7")}, {Key: "tenant", Value: []byte{0xff}},
			{Key: consumer.HeaderDeadLetterReason, Value: []byte("an earlier reason")}, // replaced
		}}
	kept := rec.Headers[:3]
	for _, tc := range []struct {
		form    dlForm
		omitted []string
		headers []kafkago.Header
		key     []byte
	}{
		{dlFull, nil, kept, []byte("k")},
		{dlReference, []string{"body"}, kept, []byte("k")},
		{dlMinimal, []string{"body", "key", "headers"}, kept[:1], nil},
	} {
		t.Run(tc.form.String(), func(t *testing.T) {
			dl := deadLetterRecord(rec, 3, errors.New("boom"), tc.form)
			got, err := ParseDeadLetter(dl)
			if err != nil {
				t.Fatal(err)
			}
			if got.Reason != "boom" || got.Attempts != 3 || !slices.Equal(got.Omitted, tc.omitted) || got.Reference() != (tc.omitted != nil) {
				t.Errorf("reason %q, attempts %d, omitted %q, want boom, 3, %q", got.Reason, got.Attempts, got.Omitted, tc.omitted)
			}
			o := got.Original
			if o.Topic != "orders" || o.Partition != 2 || o.Offset != 41 || !o.Time.Equal(rec.Time) || !bytes.Equal(o.Key, tc.key) {
				t.Errorf("original %s/%d@%d at %v, key %q", o.Topic, o.Partition, o.Offset, o.Time, o.Key)
			}
			if !reflect.DeepEqual(o.Headers, tc.headers) {
				t.Errorf("headers %q, want %q", o.Headers, tc.headers)
			}
			if (tc.form == dlFull) != bytes.Equal(o.Value, rec.Value) {
				t.Errorf("value %q", o.Value)
			}
		})
	}
}

func TestParseDeadLetterRejects(t *testing.T) {
	full := deadLetterRecord(kafkago.Message{Topic: "t", Partition: 1, Offset: 2}, 1, errors.New("boom"), dlFull)
	without := func(key string) kafkago.Message {
		m := full
		m.Headers = slices.DeleteFunc(slices.Clone(m.Headers), func(h kafkago.Header) bool { return h.Key == key })
		return m
	}
	with := func(key, value string) kafkago.Message {
		m := without(key)
		m.Headers = append(m.Headers, kafkago.Header{Key: key, Value: []byte(value)})
		return m
	}
	for name, rec := range map[string]kafkago.Message{
		"ordinary record":   {Topic: "t", Value: []byte("x")},
		"no reason":         without(consumer.HeaderDeadLetterReason),
		"no topic":          without(consumer.HeaderOriginalTopic),
		"no partition":      without(consumer.HeaderOriginalPartition),
		"no offset":         without(consumer.HeaderOriginalOffset),
		"partition not int": with(consumer.HeaderOriginalPartition, "two"),
		"negative offset":   with(consumer.HeaderOriginalOffset, "-1"),
		"attempts not int":  with(consumer.HeaderAttempts, "3.0"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseDeadLetter(rec); !errors.Is(err, ErrNotDeadLetter) {
				t.Fatalf("error %v, want ErrNotDeadLetter", err)
			}
		})
	}
}

// FuzzParseDeadLetter: a dead letter of any record parses back to the
// record's location, key, body and headers (the dead-letter ones removed),
// and no input makes the parser panic.
func FuzzParseDeadLetter(f *testing.F) {
	f.Add([]byte("k"), []byte("body"), "tenant", []byte("7"), "boom", 3, int64(41))
	f.Add([]byte(nil), []byte(nil), consumer.HeaderAttempts, []byte("x"), "", 0, int64(0))
	f.Fuzz(func(t *testing.T, key, value []byte, hk string, hv []byte, reason string, partition int, offset int64) {
		if partition < 0 || offset < 0 {
			return
		}
		rec := kafkago.Message{Topic: "t", Partition: partition, Offset: offset, Key: key, Value: value,
			Headers: []kafkago.Header{{Key: hk, Value: hv}}}
		_, _ = ParseDeadLetter(rec) // any record: no panic
		got, err := ParseDeadLetter(deadLetterRecord(rec, 2, errors.New(reason), dlFull))
		if err != nil {
			t.Fatal(err)
		}
		o := got.Original
		if o.Topic != "t" || o.Partition != partition || o.Offset != offset || !bytes.Equal(o.Key, key) || !bytes.Equal(o.Value, value) {
			t.Fatalf("original %+v", o)
		}
		dlHeader := slices.Contains([]string{consumer.HeaderDeadLetterReason, consumer.HeaderOriginalTopic, consumer.HeaderOriginalPartition,
			consumer.HeaderOriginalOffset, consumer.HeaderAttempts, consumer.HeaderDeadLetterOmitted}, hk)
		if kept := len(o.Headers) == 1 && o.Headers[0].Key == hk && bytes.Equal(o.Headers[0].Value, hv); kept == dlHeader {
			t.Fatalf("header %q kept: %v", hk, kept)
		}
	})
}
