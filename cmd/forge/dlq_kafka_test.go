package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/kafkatest"
	"github.com/uuidforge/uuidforge/lineage"
)

func kafkaRecord(key string, id uuid.UUID, value []byte, headers ...string) kafkago.Message {
	m := kafkago.Message{Key: []byte(key), Value: value, Headers: []kafkago.Header{
		{Key: lineage.HeaderMessageID, Value: []byte(id.String())}, {Key: lineage.HeaderMessageType, Value: []byte("order.created")}}}
	for i := 0; i+1 < len(headers); i += 2 {
		m.Headers = append(m.Headers, kafkago.Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return m
}

// runKafka runs a kafkasub consumer of topic in group with handler h until
// done returns true, then stops it.
func runKafka(t *testing.T, brokers []string, topic, group string, h consumer.HandlerFunc, done func() bool, opts ...consumer.Option) {
	t.Helper()
	opts = append([]consumer.Option{consumer.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		consumer.WithShutdownTimeout(10 * time.Second), consumer.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	c, err := kafkasub.New(brokers, topic, group, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !done() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("consumer: %v", err)
	}
	if !done() {
		t.Fatal("after 30s: the consumer did not get there")
	}
}

func topicSize(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	n, err := testenv.TopicSize(testenv.Context(t, 10*time.Second), brokers, topic)
	if err != nil {
		return -1
	}
	return n
}

func groups(t *testing.T, brokers []string) []string {
	t.Helper()
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
	resp, err := c.ListGroups(testenv.Context(t, 10*time.Second), &kafkago.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range resp.Groups {
		out = append(out, g.GroupID)
	}
	slices.Sort(out)
	return out
}

// deleteRecords deletes the records of topic's partition before offset,
// as retention does, with a DeleteRecords request (kafka-go has none).
func deleteRecords(t *testing.T, broker, topic string, partition int32, before int64) {
	t.Helper()
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.Version, req.TimeoutMillis = 1, 5000
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = partition, before
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	conn, err := net.DialTimeout("tcp", broker, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("forge-test")).AppendRequest(nil, req, 1)); err != nil {
		t.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	resp.Version = req.Version
	if err := resp.ReadFrom(body[4:]); err != nil { // after the correlation ID
		t.Fatal(err)
	}
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatalf("delete records: error code %d", code)
	}
}

// TestDLQKafka: real dead letters of a kafkasub consumer — a plain one (the
// handler failed twice) and a reference (the record was too large for its
// dead letter to hold the body) — are listed and shown without a consumer
// group or a commit, and redriven to their original topic and partition; a
// consumer that now succeeds processes each once, with its original ID,
// headers and body (the reference's read from the original topic). The
// position printed continues after them; once retention removed the
// original of the reference, redrive refuses it.
func TestDLQKafka(t *testing.T) {
	k := testenv.InProcessKafka(t, kafkatest.WithPartitions(2))
	brokers := k.Brokers()
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	dlt := topic + consumer.DeadLetterSuffix
	plainID, bigID, okID, corr := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	big := make([]byte, 1_048_400)
	rand.Read(big)
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond, Balancer: &kafkago.Hash{}, BatchBytes: 4 << 20}
	defer w.Close()
	plain := kafkaRecord("a", plainID, []byte("plain body"), lineage.HeaderCorrelationID, corr.String(), "tenant", "7")
	plain.Headers = append(plain.Headers, kafkago.Header{Key: "bin", Value: []byte{0xff, 0}})
	ctx := testenv.Context(t, 60*time.Second)
	var err error
	for range 50 { // topic creation is asynchronous
		if err = w.WriteMessages(ctx, plain, kafkaRecord("b", bigID, big), kafkaRecord("a", okID, []byte("fine"))); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	var first seen
	runKafka(t, brokers, topic, group, func(_ context.Context, m *consumer.Message) error {
		switch m.ID {
		case plainID:
			return errors.New("boom: kafka plain")
		case bigID:
			return consumer.Permanent(errors.New("boom: too big"))
		}
		first.add(m)
		return nil
	}, func() bool { return first.count(okID) == 1 && topicSize(t, brokers, dlt) == 2 }, consumer.WithMaxAttempts(2))
	groupsBefore := groups(t, brokers)
	broker := []string{"--topic", topic, "--kafka", strings.Join(brokers, ",")}

	out, _ := dlqCLI(t, nil, 0, append([]string{"list"}, broker...)...)
	for _, want := range []string{plainID.String(), bigID.String(), "plain", "reference", "boom: kafka plain", "2 of 2 dead letters read from topic " + dlt} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
	out, _ = dlqCLI(t, nil, 0, append([]string{"list", "--json"}, broker...)...)
	var bigPartition int
	for _, l := range readLines(t, out) {
		if l.Topic != topic || l.Partition == nil || l.Offset == nil || !l.Redrivable {
			t.Errorf("dead letter %+v", l)
			continue
		}
		switch l.MessageID {
		case plainID.String():
			if l.Form != "plain" || l.Attempts != 2 || l.Reason != "boom: kafka plain" || l.CorrelationID != corr.String() || l.Type != "order.created" {
				t.Errorf("plain dead letter: %+v", l)
			}
		case bigID.String():
			bigPartition = *l.Partition
			if l.Form != "reference" || !slices.Equal(l.Omitted, []string{"body"}) || l.Attempts != 1 {
				t.Errorf("reference dead letter: %+v", l)
			}
		default:
			t.Errorf("unexpected dead letter %+v", l)
		}
	}
	out, _ = dlqCLI(t, nil, 0, append([]string{"list", "--json", "--reason-regexp", "too big$"}, broker...)...)
	if got := ids(readLines(t, out)); !slices.Equal(got, []string{bigID.String()}) {
		t.Errorf("list --reason-regexp: %v", got)
	}

	env := map[string]string{envKafka: strings.Join(brokers, ",")}
	if out, _ := dlqCLI(t, env, 0, "show", "--raw", "--topic", dlt, bigID.String()); !bytes.Equal([]byte(out), big) {
		t.Errorf("show --raw of the reference: %d bytes, want the original's %d", len(out), len(big))
	}
	out, _ = dlqCLI(t, env, 0, "show", "--topic", topic, plainID.String())
	for _, want := range []string{"form:           plain", `tenant: "7"`, `bin: "\xff\x00"`, "plain body", `key: "a"`} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}
	out, _ = dlqCLI(t, env, 0, "show", "--topic", topic, bigID.String())
	if !strings.Contains(out, "binary, read from topic "+topic) {
		t.Errorf("show of the reference does not say where its body came from:\n%s", out)
	}

	out, _ = dlqCLI(t, nil, 0, append([]string{"redrive", "--dry-run", "--all"}, broker...)...)
	if strings.Count(out, "would redrive") != 3 || topicSize(t, brokers, topic) != 3 {
		t.Errorf("dry run: %d records in %s; output:\n%s", topicSize(t, brokers, topic), topic, out)
	}
	out, _ = dlqCLI(t, nil, 0, append([]string{"redrive", "--all", "--json"}, broker...)...)
	lines := readLines(t, out)
	sum := lines[len(lines)-1]
	if len(lines) != 3 || sum.Redriven == nil || *sum.Redriven != 2 || sum.FromOffset == "" || topicSize(t, brokers, topic) != 5 {
		t.Fatalf("redrive: %d records in %s; output:\n%.2000s", topicSize(t, brokers, topic), topic, out)
	}
	dlqCLI(t, nil, exitAbsent, append([]string{"redrive", "--all", "--from-offset", sum.FromOffset}, broker...)...)
	if got := groups(t, brokers); !slices.Equal(got, groupsBefore) {
		t.Errorf("consumer groups %v, before the commands %v", got, groupsBefore)
	}
	if n := topicSize(t, brokers, dlt); n != 2 {
		t.Errorf("%d dead letters, want 2 (a Kafka dead letter stays)", n)
	}

	var second seen
	runKafka(t, brokers, topic, group, func(_ context.Context, m *consumer.Message) error { second.add(m); return nil },
		func() bool { return second.count(plainID) == 1 && second.count(bigID) == 1 })
	time.Sleep(200 * time.Millisecond)
	if second.total() != 2 {
		t.Errorf("%d records processed, want the 2 redriven", second.total())
	}
	p := second.msg(plainID)
	if p.CorrelationID != corr || p.Type != "order.created" || string(p.Body) != "plain body" || p.Headers["tenant"] != "7" || string(p.Key) != "a" {
		t.Errorf("redriven plain record: %+v", p)
	}
	for k := range p.Headers {
		if strings.HasPrefix(k, "x-") {
			t.Errorf("redriven record keeps the dead-letter header %s", k)
		}
	}
	if b := second.msg(bigID); !bytes.Equal(b.Body, big) {
		t.Errorf("redriven reference: %d-byte body", len(b.Body))
	}

	// Retention removes the originals: the reference cannot be redriven
	// any more, the plain dead letter still can.
	deleteRecords(t, brokers[0], topic, int32(bigPartition), -1) // -1: up to the end
	out, errOut := dlqCLI(t, nil, 1, append([]string{"redrive", "--id", bigID.String()}, broker...)...)
	if !strings.Contains(out, "refused") || !strings.Contains(out, "is no longer there") || !strings.Contains(errOut, "1 of 1 matching dead letters not redriven") {
		t.Errorf("redrive after retention: stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	dlqCLI(t, nil, 0, append([]string{"redrive", "--id", plainID.String()}, broker...)...)
}

func setMaxMessageBytes(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: &kafkago.Transport{}}
	resp, err := c.AlterConfigs(testenv.Context(t, 10*time.Second), &kafkago.AlterConfigsRequest{Resources: []kafkago.AlterConfigRequestResource{{
		ResourceType: kafkago.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafkago.AlterConfigRequestConfig{{Name: "max.message.bytes", Value: strconv.Itoa(n)}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range resp.Errors {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A republish the broker refuses (the original topic's max.message.bytes
// was lowered below the record's size) fails; the dead letters before it
// are redriven, and the position printed to continue from stays at the
// failed one, so that the next run redrives it, and only it.
func TestDLQKafkaFailedRepublish(t *testing.T) {
	k := testenv.InProcessKafka(t)
	brokers := k.Brokers()
	topic, group := testenv.Name(t, "topic"), testenv.Name(t, "group")
	ctx := testenv.Context(t, 60*time.Second)
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	small, large := uuid.New(), uuid.New()
	body := make([]byte, 4000)
	rand.Read(body)
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafkaRecord("k", small, []byte("small")), kafkaRecord("k", large, body)); err != nil {
		t.Fatal(err)
	}
	dlt := topic + consumer.DeadLetterSuffix
	runKafka(t, brokers, topic, group, func(context.Context, *consumer.Message) error { return consumer.Permanent(errors.New("boom")) },
		func() bool { return topicSize(t, brokers, dlt) == 2 })
	setMaxMessageBytes(t, brokers, topic, 1000)
	broker := []string{"--topic", topic, "--kafka", strings.Join(brokers, ",")}

	out, _ := dlqCLI(t, nil, 1, append([]string{"redrive", "--all", "--json"}, broker...)...)
	lines := readLines(t, out)
	if len(lines) != 3 || lines[0].MessageID != small.String() || lines[0].Action != "redriven" ||
		lines[1].MessageID != large.String() || lines[1].Action != "failed" || lines[1].Error == "" {
		t.Fatalf("redrive:\n%s", out)
	}
	from := lines[2].FromOffset
	if want := lines[1].DeadLetter; !strings.Contains(","+from+",", ","+want+",") {
		t.Errorf("continue from %q; want it to hold at the failed dead letter %s", from, want)
	}
	setMaxMessageBytes(t, brokers, topic, 1_048_588)
	out, _ = dlqCLI(t, nil, 0, append([]string{"redrive", "--all", "--json", "--from-offset", from}, broker...)...)
	if got := ids(readLines(t, out)); !slices.Equal(got, []string{large.String()}) {
		t.Errorf("the next run redrove %v, want the failed one alone", got)
	}
	if n := topicSize(t, brokers, topic); n != 4 {
		t.Errorf("%d records in %s, want the 2 originals and one copy of each", n, topic)
	}
}
