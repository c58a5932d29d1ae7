package kafkasub

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/uuidforge/uuidforge/consumer"
)

// ErrNotDeadLetter is returned by [ParseDeadLetter] for a record that is not
// a dead letter of this package.
var ErrNotDeadLetter = errors.New("kafkasub: not a dead letter")

// DeadLetter is a dead letter as [ParseDeadLetter] reads it: the original
// record, as far as the dead letter holds it, and why it was dead-lettered.
type DeadLetter struct {
	// Original is the original record: Topic, Partition and Offset locate
	// it in its topic; Key, Value, Headers (the dead-letter headers
	// removed, the others in their order) and Time are the dead letter's,
	// which are the original's except for the parts Omitted lists.
	Original kafkago.Message
	// Reason says why the record was dead-lettered (at most
	// [consumer.MaxReasonBytes] bytes).
	Reason string
	// Attempts is how often the handler ran; 0 when it never did (a
	// malformed ID).
	Attempts int
	// Omitted lists the parts of the original that the dead letter does not
	// hold ("body"; "body", "key" and "headers" for a minimal reference):
	// empty for a full dead letter. The original of such a reference dead
	// letter is read from Original.Topic at Original.Partition and
	// Original.Offset, until the topic's retention removes it.
	Omitted []string
}

// Reference reports whether the dead letter is a reference, without the
// original's body: the original must be read from its topic.
func (d DeadLetter) Reference() bool { return len(d.Omitted) > 0 }

// ParseDeadLetter reads a record of a dead-letter topic written by a
// [Consumer] (see "Dead letters" in the package documentation). It returns
// an error wrapping [ErrNotDeadLetter] for a record without the reason and
// original-location headers, or whose partition, offset or attempts are
// not decimal numbers.
func ParseDeadLetter(rec kafkago.Message) (DeadLetter, error) {
	var d DeadLetter
	var have struct{ reason, topic, partition, offset bool }
	headers := make([]kafkago.Header, 0, len(rec.Headers))
	for _, h := range rec.Headers {
		v := string(h.Value)
		var err error
		switch h.Key {
		case consumer.HeaderDeadLetterReason:
			d.Reason, have.reason = v, true
		case consumer.HeaderOriginalTopic:
			d.Original.Topic, have.topic = v, true
		case consumer.HeaderOriginalPartition:
			d.Original.Partition, err = strconv.Atoi(v)
			have.partition = true
		case consumer.HeaderOriginalOffset:
			d.Original.Offset, err = strconv.ParseInt(v, 10, 64)
			have.offset = true
		case consumer.HeaderAttempts:
			d.Attempts, err = strconv.Atoi(v)
		case consumer.HeaderDeadLetterOmitted:
			if v != "" {
				d.Omitted = strings.Split(v, ",")
			}
		default:
			headers = append(headers, h)
		}
		if err != nil {
			return DeadLetter{}, fmt.Errorf("%w: header %s %q is not a decimal number", ErrNotDeadLetter, h.Key, v)
		}
	}
	switch {
	case !have.reason || !have.topic || !have.partition || !have.offset:
		return DeadLetter{}, fmt.Errorf("%w: it lacks one of the headers %s, %s, %s and %s", ErrNotDeadLetter,
			consumer.HeaderDeadLetterReason, consumer.HeaderOriginalTopic, consumer.HeaderOriginalPartition, consumer.HeaderOriginalOffset)
	case d.Original.Partition < 0 || d.Original.Offset < 0:
		return DeadLetter{}, fmt.Errorf("%w: negative original partition or offset", ErrNotDeadLetter)
	}
	if len(headers) == 0 {
		headers = nil
	}
	d.Original.Key, d.Original.Value, d.Original.Headers, d.Original.Time = rec.Key, rec.Value, headers, rec.Time
	return d, nil
}
