package kafkasub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
	"github.com/uuidforge/uuidforge/lineage"
)

// dlBatchBytes lets the default dead-letter writer send what the broker
// may accept once compressed; the broker decides, not the client.
const dlBatchBytes = 64 << 20

// maxReferenceHeader bounds each header value kept in a minimal reference
// dead letter.
const maxReferenceHeader = 1024

// dlForm is how much of the original record a dead letter carries.
type dlForm int

const (
	dlFull      dlForm = iota // key, body and headers
	dlReference               // key and headers; no body
	dlMinimal                 // the ID headers only (values bounded); no key, no body
)

func (f dlForm) String() string {
	return [...]string{"full", "reference", "minimal reference"}[f]
}

// deadLetterRecord builds the dead letter of rec in form f.
func deadLetterRecord(rec kafkago.Message, attempts int, reason error, f dlForm) kafkago.Message {
	headers := make([]kafkago.Header, 0, len(rec.Headers)+6)
	kept := map[string]bool{} // the minimal form keeps one of each ID header
	for _, h := range rec.Headers {
		switch h.Key {
		case consumer.HeaderDeadLetterReason, consumer.HeaderOriginalTopic, consumer.HeaderOriginalPartition,
			consumer.HeaderOriginalOffset, consumer.HeaderAttempts, consumer.HeaderDeadLetterOmitted:
			continue
		case lineage.HeaderMessageID, lineage.HeaderCorrelationID, lineage.HeaderCausationID, lineage.HeaderMessageType:
			if f == dlMinimal {
				if kept[h.Key] {
					continue
				}
				kept[h.Key] = true
				h.Value = bounded(h.Value, maxReferenceHeader)
			}
		default:
			if f == dlMinimal {
				continue
			}
		}
		headers = append(headers, h)
	}
	headers = append(headers,
		kafkago.Header{Key: consumer.HeaderDeadLetterReason, Value: []byte(consumer.Reason(reason))},
		kafkago.Header{Key: consumer.HeaderOriginalTopic, Value: []byte(rec.Topic)},
		kafkago.Header{Key: consumer.HeaderOriginalPartition, Value: []byte(strconv.Itoa(rec.Partition))},
		kafkago.Header{Key: consumer.HeaderOriginalOffset, Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		kafkago.Header{Key: consumer.HeaderAttempts, Value: []byte(strconv.Itoa(attempts))},
	)
	out := kafkago.Message{Key: rec.Key, Value: rec.Value, Headers: headers, Time: rec.Time}
	switch f {
	case dlReference:
		out.Value = nil
		out.Headers = append(out.Headers, kafkago.Header{Key: consumer.HeaderDeadLetterOmitted, Value: []byte("body")})
	case dlMinimal:
		out.Key, out.Value = nil, nil
		out.Headers = append(out.Headers, kafkago.Header{Key: consumer.HeaderDeadLetterOmitted, Value: []byte("body,key,headers")})
	}
	return out
}

// bounded returns v cut to at most n bytes, at a UTF-8 boundary when v is
// text.
func bounded(v []byte, n int) []byte {
	if len(v) <= n {
		return v
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut]
}

// tooLarge reports a dead letter the client or the broker refuses for its
// size.
func tooLarge(err error) bool {
	var mtl kafkago.MessageTooLargeError
	return errors.As(err, &mtl) || errors.Is(err, kafkago.MessageSizeTooLarge)
}

// deadLetter writes the dead letter of rec and returns nil once the broker
// stored it, or an error when stop or work ended first.
//
// A dead letter too large for the broker is written again at once as a
// reference (without the body), then if needed as a minimal reference (the
// ID headers only); each step is logged at ERROR, since the original must
// then be read from its topic. Any other failure is logged at ERROR on the
// first attempt and then once a minute while it lasts, and retried with
// the consumer's back-off: the record is not committed without its dead
// letter, so its partition waits.
func (c *Consumer) deadLetter(stop, work context.Context, dl *kafkago.Writer, rec kafkago.Message, m *consumer.Message, reason error, log *slog.Logger) error {
	form := dlFull
	bo := c.proc.Backoff()
	failures := 0
	var logged time.Time
	for {
		err := dl.WriteMessages(work, deadLetterRecord(rec, m.Attempt, reason, form))
		var we kafkago.WriteErrors
		if errors.As(err, &we) && len(we) == 1 {
			err = we[0]
		}
		if err == nil {
			if failures > 0 {
				log.InfoContext(work, "kafkasub: dead letter written after failed attempts", "dead_letter_topic", dl.Topic, "attempts", failures+1, "form", form.String())
			}
			return nil
		}
		if tooLarge(err) && form < dlMinimal {
			form++
			log.ErrorContext(work, fmt.Sprintf("kafkasub: dead letter too large; writing a %s dead letter instead, the original stays in its topic at this partition and offset", form),
				"dead_letter_topic", dl.Topic, "record_bytes", len(rec.Key)+len(rec.Value), "error", err)
			continue
		}
		failures++
		if failures == 1 || time.Since(logged) >= time.Minute {
			logged = time.Now()
			log.ErrorContext(work, "kafkasub: dead letter not written; retrying, the record is not committed and its partition waits",
				"dead_letter_topic", dl.Topic, "attempts", failures, "form", form.String(), "error", err)
		}
		if !sleep(stop, bo.NextBackOff()) || work.Err() != nil {
			return fmt.Errorf("kafkasub: dead letter to %s: %w", dl.Topic, err)
		}
	}
}
