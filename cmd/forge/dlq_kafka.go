package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/consumer/kafkasub"
	"github.com/uuidforge/uuidforge/lineage"
)

// Fetch sizes: a fetch returns at least one whole record batch, however
// large; maxFetchBytes only bounds how many more it adds.
const (
	maxFetchBytes = 16 << 20
	fetchWait     = 500 * time.Millisecond
)

// kafkaSource reads a Kafka dead-letter topic partition by partition, from
// its oldest record (or --from-offset) up to its end when opened, with
// fetch requests: no consumer group, nothing committed.
type kafkaSource struct {
	where     string
	topic     string
	client    *kafkago.Client
	transport *kafkago.Transport
	parts     []int
	start     map[int]int64 // where each partition is read from
	end       map[int]int64 // each partition's end when opened

	next map[int]int64 // where a next run continues, by partition
	held map[int]bool  // next stays at a dead letter whose redrive failed

	originals map[string]map[int]bool // original topics' partitions, cached; nil: no such topic
}

// kafkaState is what show and redrive need of a Kafka dead letter.
type kafkaState struct {
	dl        kafkasub.DeadLetter
	partition int   // of the dead letter
	offset    int64 // of the dead letter
	checked   bool  // complete ran
}

// errGone marks an original that cannot be read again; a later run would
// not do better, so it does not hold the position to continue from.
type errGone struct{ msg string }

func (e errGone) Error() string { return e.msg }

func openKafka(ctx context.Context, brokers []string, name string, from map[int]int64, sec kafkaSecurity, stderr io.Writer) (*kafkaSource, error) {
	t := sec.transport()
	s := &kafkaSource{
		client: &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: t}, transport: t,
		start: map[int]int64{}, end: map[int]int64{}, next: map[int]int64{}, held: map[int]bool{},
		originals: map[string]map[int]bool{},
	}
	at := strings.Join(brokers, ",")
	candidates := []string{name}
	if !strings.HasSuffix(name, consumer.DeadLetterSuffix) {
		candidates = []string{name + consumer.DeadLetterSuffix, name}
	}
	meta, err := s.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: candidates})
	if err != nil {
		s.close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errorf("%s: %w (the broker closed the connection: %s)", at, err, sec.hint())
		}
		return nil, errorf("%s: %w", at, err)
	}
	var parts []kafkago.Partition
	for i, c := range candidates {
		for _, tm := range meta.Topics {
			if tm.Name == c && tm.Error == nil && s.topic == "" {
				s.topic, parts = c, tm.Partitions
				if i > 0 {
					fmt.Fprintf(stderr, "forge: no topic %s: reading %s itself\n", candidates[0], c)
				}
			}
		}
	}
	if s.topic == "" {
		s.close()
		return nil, errorf("%s: no topic %s", at, strings.Join(candidates, " or "))
	}
	s.where = fmt.Sprintf("topic %s at %s", s.topic, at)
	var reqs []kafkago.OffsetRequest
	for _, p := range parts {
		s.parts = append(s.parts, p.ID)
		reqs = append(reqs, kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
	}
	slices.Sort(s.parts)
	for p := range from {
		if !slices.Contains(s.parts, p) {
			s.close()
			return nil, errorf("%w: --from-offset: %s has no partition %d", errUsage, s.where, p)
		}
	}
	offs, err := s.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{s.topic: reqs}})
	if err != nil {
		s.close()
		return nil, errorf("%s: offsets: %w", s.where, err)
	}
	for _, po := range offs.Topics[s.topic] {
		if po.Error != nil {
			s.close()
			return nil, errorf("%s: offsets of partition %d: %w", s.where, po.Partition, po.Error)
		}
		s.start[po.Partition], s.end[po.Partition] = po.FirstOffset, po.LastOffset
		if o, ok := from[po.Partition]; ok && o > po.FirstOffset {
			s.start[po.Partition] = o
		}
		s.next[po.Partition] = s.start[po.Partition]
	}
	return s, nil
}

func (s *kafkaSource) describe() string { return s.where }

func (s *kafkaSource) close() { s.transport.CloseIdleConnections() }

func (s *kafkaSource) warn(io.Writer) {}

// resume returns, by partition, the offset a next run continues from:
// after the last dead letter read, or at the first whose redrive failed.
func (s *kafkaSource) resume() map[int]int64 { return s.next }

// hold keeps the position to continue from at a dead letter whose redrive
// failed, so that the next run tries it again.
func (s *kafkaSource) hold(partition int, offset int64) {
	if !s.held[partition] {
		s.held[partition], s.next[partition] = true, offset
	}
}

func (s *kafkaSource) scan(ctx context.Context, visit func(*dlqEntry) (bool, error)) error {
	for _, p := range s.parts {
		off := s.start[p]
		for off < s.end[p] {
			resp, err := s.client.Fetch(ctx, &kafkago.FetchRequest{Topic: s.topic, Partition: p, Offset: off,
				MinBytes: 1, MaxBytes: maxFetchBytes, MaxWait: fetchWait})
			if err != nil {
				return errorf("%s: fetch partition %d at offset %d: %w", s.where, p, off, err)
			}
			if errors.Is(resp.Error, kafkago.OffsetOutOfRange) && resp.LogStartOffset > off {
				off = resp.LogStartOffset // retention removed records meanwhile
				continue
			}
			if resp.Error != nil {
				return errorf("%s: fetch partition %d at offset %d: %w", s.where, p, off, resp.Error)
			}
			read := 0
			for {
				rec, err := resp.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return errorf("%s: read partition %d at offset %d: %w", s.where, p, off, err)
				}
				if rec.Offset < off {
					continue
				}
				if rec.Offset >= s.end[p] {
					break
				}
				msg, err := message(s.topic, p, rec)
				if err != nil {
					return errorf("%s: read partition %d at offset %d: %w", s.where, p, rec.Offset, err)
				}
				read++
				off = rec.Offset + 1
				more, err := visit(s.entry(p, msg))
				if !s.held[p] {
					s.next[p] = off
				}
				if err != nil || !more {
					return err
				}
			}
			if read == 0 {
				off++ // no record at off: a transaction marker, or compacted away
			}
		}
		if !s.held[p] {
			s.next[p] = max(off, s.next[p])
		}
	}
	return nil
}

// message copies rec, valid only until the next read, into a message.
func message(topic string, partition int, rec *kafkago.Record) (kafkago.Message, error) {
	m := kafkago.Message{Topic: topic, Partition: partition, Offset: rec.Offset, Time: rec.Time}
	var err error
	if rec.Key != nil {
		if m.Key, err = kafkago.ReadAll(rec.Key); err != nil {
			return m, err
		}
	}
	if rec.Value != nil {
		if m.Value, err = kafkago.ReadAll(rec.Value); err != nil {
			return m, err
		}
	}
	m.Headers = make([]kafkago.Header, len(rec.Headers))
	for i, h := range rec.Headers {
		m.Headers[i] = kafkago.Header{Key: h.Key, Value: slices.Clone(h.Value)}
	}
	return m, nil
}

// entry describes msg, a record of the dead-letter topic.
func (s *kafkaSource) entry(partition int, msg kafkago.Message) *dlqEntry {
	e := &dlqEntry{Pos: fmt.Sprintf("%d:%d", partition, msg.Offset)}
	dl, err := kafkasub.ParseDeadLetter(msg)
	if err != nil {
		e.Form, e.Problem = "not a dead letter", strings.TrimPrefix(err.Error(), "kafkasub: ")
		dl.Original = msg
	} else {
		e.Form = "plain"
		if dl.Reference() {
			e.Form = "reference"
		}
		e.Topic, e.Partition, e.Offset, e.Omitted = dl.Original.Topic, dl.Original.Partition, dl.Original.Offset, dl.Omitted
		e.Reason, e.Attempts = dl.Reason, dl.Attempts
	}
	e.fillKafka(dl.Original, !dl.Reference())
	e.state = &kafkaState{dl: dl, partition: partition, offset: msg.Offset}
	return e
}

// fillKafka sets e's IDs, headers, key and body from m; the body only when
// withBody.
func (e *dlqEntry) fillKafka(m kafkago.Message, withBody bool) {
	e.MessageID = kafkaHeader(m.Headers, lineage.HeaderMessageID)
	e.CorrelationID = kafkaHeader(m.Headers, lineage.HeaderCorrelationID)
	e.CausationID = kafkaHeader(m.Headers, lineage.HeaderCausationID)
	e.Type = kafkaHeader(m.Headers, lineage.HeaderMessageType)
	e.Headers = make([]dlqField, len(m.Headers))
	for i, h := range m.Headers {
		var js any = string(h.Value)
		if !utf8.Valid(h.Value) {
			js = map[string]string{"base64": base64.StdEncoding.EncodeToString(h.Value)}
		}
		e.Headers[i] = dlqField{Name: h.Key, Text: quoteBytes(h.Value, maxText), JSON: js}
	}
	e.Key = m.Key
	e.Body = nil
	if withBody {
		e.Body = m.Value
		if e.Body == nil {
			e.Body = []byte{}
		}
	}
}

// kafkaHeader returns the first value of header k.
func kafkaHeader(hs []kafkago.Header, k string) string {
	for _, h := range hs {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// complete checks that the original topic and partition exist and reads
// the original of a reference dead letter from there.
func (s *kafkaSource) complete(ctx context.Context, e *dlqEntry) error {
	st := e.state.(*kafkaState)
	if st.checked || e.Topic == "" {
		return nil
	}
	err := s.checkOriginal(ctx, e, st)
	var gone errGone
	if err != nil && !errors.As(err, &gone) {
		s.hold(st.partition, st.offset)
	}
	st.checked = err == nil
	return err
}

func (s *kafkaSource) checkOriginal(ctx context.Context, e *dlqEntry, st *kafkaState) error {
	parts, ok := s.originals[e.Topic]
	if !ok {
		meta, err := s.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{e.Topic}})
		if err != nil {
			return fmt.Errorf("topic %s: %w", e.Topic, err)
		}
		for _, tm := range meta.Topics {
			if tm.Name == e.Topic && tm.Error == nil {
				parts = map[int]bool{}
				for _, p := range tm.Partitions {
					parts[p.ID] = true
				}
			}
		}
		s.originals[e.Topic] = parts
	}
	switch {
	case parts == nil:
		return errGone{fmt.Sprintf("the original topic %s does not exist", e.Topic)}
	case !parts[e.Partition]:
		return errGone{fmt.Sprintf("the original topic %s has no partition %d", e.Topic, e.Partition)}
	case !st.dl.Reference():
		return nil
	}
	orig, err := s.fetchOne(ctx, e.Topic, e.Partition, e.Offset)
	if err != nil {
		return err
	}
	if id := kafkaHeader(orig.Headers, lineage.HeaderMessageID); e.MessageID != "" && id != e.MessageID {
		return errGone{fmt.Sprintf("the record at topic %s partition %d offset %d has message ID %q, not %q: it is not this dead letter's original",
			e.Topic, e.Partition, e.Offset, id, e.MessageID)}
	}
	st.dl.Original.Key, st.dl.Original.Value, st.dl.Original.Headers = orig.Key, orig.Value, orig.Headers
	e.fillKafka(orig, true)
	e.BodyFrom = fmt.Sprintf("topic %s partition %d offset %d", e.Topic, e.Partition, e.Offset)
	return nil
}

// fetchOne reads the record at offset of topic's partition.
func (s *kafkaSource) fetchOne(ctx context.Context, topic string, partition int, offset int64) (kafkago.Message, error) {
	where := fmt.Sprintf("topic %s partition %d offset %d", topic, partition, offset)
	resp, err := s.client.Fetch(ctx, &kafkago.FetchRequest{Topic: topic, Partition: partition, Offset: offset,
		MinBytes: 1, MaxBytes: maxFetchBytes, MaxWait: fetchWait})
	if err != nil {
		return kafkago.Message{}, fmt.Errorf("read the original at %s: %w", where, err)
	}
	if errors.Is(resp.Error, kafkago.OffsetOutOfRange) {
		return kafkago.Message{}, errGone{fmt.Sprintf("the original at %s is no longer there: the partition's retention removed it "+
			"(it now holds offsets %d to %d)", where, resp.LogStartOffset, resp.HighWatermark-1)}
	}
	if resp.Error != nil {
		return kafkago.Message{}, fmt.Errorf("read the original at %s: %w", where, resp.Error)
	}
	for {
		rec, err := resp.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return kafkago.Message{}, fmt.Errorf("read the original at %s: %w", where, err)
		}
		if rec.Offset < offset {
			continue
		}
		if rec.Offset == offset {
			return message(topic, partition, rec)
		}
		break
	}
	return kafkago.Message{}, errGone{fmt.Sprintf("the original at %s is no longer there (removed by compaction or retention)", where)}
}

func (s *kafkaSource) redrive(ctx context.Context, e *dlqEntry, _ bool) (string, error) {
	st := e.state.(*kafkaState)
	o := st.dl.Original
	produce := func(c kafkago.Compression) (*kafkago.ProduceResponse, error) {
		rec := kafkago.Record{Time: time.Now(), Headers: o.Headers}
		if o.Key != nil {
			rec.Key = kafkago.NewBytes(o.Key)
		}
		if o.Value != nil {
			rec.Value = kafkago.NewBytes(o.Value)
		}
		return s.client.Produce(ctx, &kafkago.ProduceRequest{Topic: o.Topic, Partition: o.Partition,
			RequiredAcks: kafkago.RequireAll, Compression: c, Records: kafkago.NewRecordReader(rec)})
	}
	resp, err := produce(0)
	if err == nil && errors.Is(resp.Error, kafkago.MessageSizeTooLarge) {
		resp, err = produce(kafkago.Gzip) // the original may have been written compressed
	}
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		s.hold(st.partition, st.offset)
		return "", err
	}
	return fmt.Sprintf("topic %s partition %d offset %s", o.Topic, o.Partition, strconv.FormatInt(resp.BaseOffset, 10)), nil
}
