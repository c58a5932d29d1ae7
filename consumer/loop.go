package consumer

import (
	"context"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// Headers a transport adds to a dead letter. The original message's own
// headers and IDs are kept as they were.
const (
	// HeaderDeadLetterReason carries why the message was dead-lettered,
	// truncated to [MaxReasonBytes].
	HeaderDeadLetterReason = "x-dead-letter-reason"
	// HeaderAttempts carries how often the handler ran.
	HeaderAttempts = "x-attempts"
	// HeaderOriginalQueue carries the queue a RabbitMQ dead letter came from.
	HeaderOriginalQueue = "x-original-queue"
	// HeaderDeadLetterID carries a random ID of one RabbitMQ dead-letter
	// publication; it matches a broker return (the dead letter reached no
	// queue) to the publication it belongs to.
	HeaderDeadLetterID = "x-dead-letter-id"
	// HeaderOriginalTopic, HeaderOriginalPartition and HeaderOriginalOffset
	// locate the original of a Kafka dead letter.
	HeaderOriginalTopic     = "x-original-topic"
	HeaderOriginalPartition = "x-original-partition"
	HeaderOriginalOffset    = "x-original-offset"
	// HeaderDeadLetterOmitted is set on a dead letter that would have been
	// larger than the broker accepts and was written without parts of the
	// original: its value lists what was left out, comma separated ("body",
	// or "body,key,headers"). The original stays where the dead letter's
	// other headers say (a Kafka record at its topic, partition and offset,
	// until the topic's retention removes it).
	HeaderDeadLetterOmitted = "x-dead-letter-omitted"
	// DeadLetterSuffix is appended to a queue's or topic's name to name its
	// default dead letter.
	DeadLetterSuffix = ".dead-letter"
)

// MaxReasonBytes bounds the dead-letter reason: a handler error that quotes
// a large payload must not make the dead letter itself too large to store.
const MaxReasonBytes = 4096

// Reason returns err's message as a dead-letter reason: at most
// [MaxReasonBytes] bytes of valid UTF-8. A longer message is cut as
// [TruncateReason] cuts it.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if !utf8.ValidString(s) {
		s = toValidUTF8(s)
	}
	return TruncateReason(s, MaxReasonBytes)
}

// TruncateReason returns reason (valid UTF-8, as [Reason] returns it) cut
// to at most n bytes: unchanged when it fits, otherwise cut at a rune
// boundary and ending with a marker saying how many bytes were cut, e.g.
// "… [reason truncated: 195902 more bytes]"; "" when n leaves no room for
// the marker. A transport whose header has less room than MaxReasonBytes
// shortens a reason with it.
func TruncateReason(reason string, n int) string {
	if len(reason) <= n {
		return reason
	}
	marker := fmt.Sprintf("… [reason truncated: %d more bytes]", len(reason)) // an upper bound of the final count
	cut := n - len(marker)
	if cut <= 0 {
		return ""
	}
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut] + fmt.Sprintf("… [reason truncated: %d more bytes]", len(reason)-cut)
}

func toValidUTF8(s string) string {
	b := make([]byte, 0, len(s))
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n == 1 {
			b = append(b, "\\x"...)
			b = append(b, "0123456789abcdef"[s[0]>>4], "0123456789abcdef"[s[0]&15])
		} else {
			b = append(b, s[:n]...)
		}
		s = s[n:]
	}
	return string(b)
}

// ShutdownContexts returns the two contexts a consumption loop runs with:
// stop is done when ctx is, and ends taking and waiting; work outlives ctx
// by timeout, so that handlers in progress can finish and acknowledge.
// Call cancel when the loop has returned.
func ShutdownContexts(ctx context.Context, timeout time.Duration) (stop, work context.Context, cancel func()) {
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	stop, cancelStop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-done:
		}
	}()
	var once sync.Once
	return stop, work, func() {
		once.Do(func() {
			close(done)
			cancelStop()
			cancelWork()
		})
	}
}
