package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The environment variables forge dlq reads: the brokers when --amqp or
// --kafka is not given, and the Kafka SASL password, which no flag gives
// (flags show in ps).
const (
	envAMQP          = "AMQP_URL"
	envKafka         = "KAFKA_BROKERS"
	envKafkaPassword = "KAFKA_PASSWORD"
)

// defaultDLQTimeout bounds a forge dlq command unless --timeout says
// otherwise.
const defaultDLQTimeout = time.Minute

// reasonWidth is how much of a reason a list line shows.
const reasonWidth = 60

// previewBytes is how much of a body show prints without --hex.
const previewBytes = 1024

const dlqUsage = `usage:
  forge dlq list    SOURCE [FILTER] [--limit N] [--json] [--timeout D]
  forge dlq show    SOURCE [--json | --hex | --raw] [--timeout D] MESSAGE-ID
  forge dlq redrive SOURCE (FILTER | --all) [--limit N] [--dry-run] [--via-exchange] [--json] [--timeout D]

SOURCE is one of
  --queue NAME [--amqp URL]       a RabbitMQ dead-letter queue (default URL $AMQP_URL)
  --topic NAME [--kafka BROKERS] [KAFKA-SECURITY]
                                  a Kafka dead-letter topic; BROKERS is host:port,...
                                  (default $KAFKA_BROKERS)
NAME is the dead-letter queue or topic, or the one it serves: then
NAME.dead-letter is read if it exists.

KAFKA-SECURITY is for clusters that require TLS or SASL (managed Kafka
services require both):
  --kafka-tls           connect with TLS, trusting the system's CAs
  --kafka-ca FILE       trust the CA certificates of this PEM file instead of
                        the system's (implies --kafka-tls)
  --kafka-cert FILE --kafka-key FILE
                        present this client certificate and its key (PEM
                        files; implies --kafka-tls)
  --kafka-sasl MECH     authenticate with SASL: plain, scram-sha-256 or
                        scram-sha-512, as
  --kafka-user NAME     this user, with the password in $KAFKA_PASSWORD.
                        The password is read from the environment only:
                        there is no flag for it, since flags show in ps.

FILTER is any of
  --id ID               only this message ID (repeat for several)
  --reason TEXT         only reasons that contain TEXT
  --reason-regexp RE    only reasons that match RE (Go syntax)
  --from-offset P:O,... Kafka: start partition P at offset O (what redrive
                        prints to continue after it)

list prints one line per dead letter: where it is in the dead-letter queue
or topic, the message ID, type, attempts, form (plain, envelope, broker,
reference), original destination and reason. It consumes nothing: on
RabbitMQ every message read is requeued, in order, when the command ends
(a queue that others consume meanwhile may end up reordered; on a quorum
queue each read counts as a delivery); on Kafka nothing is committed.
(Whether the original of a Kafka reference is still in its topic is
checked by show and redrive, which read it.) show prints every dead
letter of one message ID in full; --raw writes the body of the only one
to stdout.

redrive publishes the original message again — its body, properties and
headers without the dead-letter headers, with its message, correlation and
causation IDs — to its original queue (through the default exchange, or
with --via-exchange to its original exchange and routing key, when known)
or to its original topic and partition. A RabbitMQ dead letter is removed
only after the broker confirmed the republished message. A Kafka dead
letter stays in its topic; redrive prints the --from-offset that continues
after it. The original of a Kafka reference dead letter is read from its
topic. Dead letters whose headers the AMQP client cannot read are refused.
--dry-run prints what would be redriven and changes nothing.

Exit status: 0 done; 3 no dead letter matched (show, redrive); 1 an error,
or some dead letters not redriven; 2 a usage error. --json prints one JSON
object per line.
`

// dlqFlags are the flags of forge dlq.
type dlqFlags struct {
	queue, amqp   string
	topic, kafka  string
	kafkaTLS      bool
	kafkaCA       string
	kafkaCert     string
	kafkaKey      string
	kafkaSASL     string
	kafkaUser     string
	ids           []string
	reason, reRaw string
	fromOffset    string
	limit         int
	asJSON        bool
	hexDump, raw  bool
	dryRun, all   bool
	viaExchange   bool
	timeout       time.Duration
	given         map[string]bool
	re            *regexp.Regexp
	from          map[int]int64
	secrets       []string
}

func cmdDLQ(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errorf("%w: dlq needs list, show or redrive", errUsage)
	}
	op := args[0]
	switch op {
	case "list", "show", "redrive":
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, dlqUsage)
		return nil
	default:
		return errorf("%w: unknown dlq command %q (list, show or redrive)", errUsage, op)
	}
	fs := newFlagSet("dlq "+op, stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, dlqUsage+"\nflags:\n")
		fs.PrintDefaults()
	}
	var f dlqFlags
	fs.StringVar(&f.queue, "queue", "", "the RabbitMQ dead-letter queue, or the queue it serves")
	fs.StringVar(&f.amqp, "amqp", "", "the RabbitMQ URL (default $"+envAMQP+")")
	fs.StringVar(&f.topic, "topic", "", "the Kafka dead-letter topic, or the topic it serves")
	fs.StringVar(&f.kafka, "kafka", "", "the Kafka bootstrap brokers, host:port,... (default $"+envKafka+")")
	fs.BoolVar(&f.kafkaTLS, "kafka-tls", false, "Kafka: connect with TLS, trusting the system's CAs")
	fs.StringVar(&f.kafkaCA, "kafka-ca", "", "Kafka: trust the CA certificates of this PEM `file` instead of the system's (implies --kafka-tls)")
	fs.StringVar(&f.kafkaCert, "kafka-cert", "", "Kafka: present the client certificate of this PEM `file` (with --kafka-key; implies --kafka-tls)")
	fs.StringVar(&f.kafkaKey, "kafka-key", "", "Kafka: the PEM `file` of the --kafka-cert certificate's private key")
	fs.StringVar(&f.kafkaSASL, "kafka-sasl", "", "Kafka: authenticate with SASL `mechanism` plain, scram-sha-256 or scram-sha-512 (with --kafka-user and $"+envKafkaPassword+")")
	fs.StringVar(&f.kafkaUser, "kafka-user", "", "Kafka: the SASL user `name`; the password comes from $"+envKafkaPassword+" only (no flag: flags show in ps)")
	fs.DurationVar(&f.timeout, "timeout", defaultDLQTimeout, "give up after this long")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object per line")
	if op != "show" {
		fs.Func("id", "only the dead letters of this message ID (repeat for several)", func(s string) error {
			if s == "" {
				return errors.New("empty ID")
			}
			f.ids = append(f.ids, s)
			return nil
		})
		fs.StringVar(&f.reason, "reason", "", "only dead letters whose reason contains this text")
		fs.StringVar(&f.reRaw, "reason-regexp", "", "only dead letters whose reason matches this regular expression (Go syntax)")
		fs.IntVar(&f.limit, "limit", 0, "handle at most this many matching dead letters (0: all)")
	}
	fs.StringVar(&f.fromOffset, "from-offset", "", "Kafka: start reading partition P at offset O, as P:O,... (default: the oldest record)")
	switch op {
	case "show":
		fs.BoolVar(&f.hexDump, "hex", false, "print the whole body as a hex dump")
		fs.BoolVar(&f.raw, "raw", false, "write the body, and nothing else, to stdout")
	case "redrive":
		fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be redriven and change nothing")
		fs.BoolVar(&f.all, "all", false, "redrive every dead letter (required when no filter is given)")
		fs.BoolVar(&f.viaExchange, "via-exchange", false, "RabbitMQ: publish to the original exchange and routing key instead of the original queue")
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	f.given = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.given[fl.Name] = true })
	if err := f.check(op, fs.Args()); err != nil {
		return err
	}
	open, err := f.source(getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	src, err := open(ctx, stderr)
	if err != nil {
		return f.scrubbed(err)
	}
	defer src.close()
	switch op {
	case "list":
		err = dlqList(ctx, src, &f, stdout)
	case "show":
		err = dlqShow(ctx, src, &f, fs.Arg(0), stdout)
	default:
		err = dlqRedrive(ctx, src, &f, stdout)
	}
	src.warn(stderr)
	if ctx.Err() != nil && err != nil && !errors.Is(err, errAbsent) {
		err = errorf("%w (--timeout %v)", err, f.timeout)
	}
	return f.scrubbed(err)
}

// check validates the flags and arguments that need no broker.
func (f *dlqFlags) check(op string, args []string) error {
	want := 0
	if op == "show" {
		want = 1
	}
	if len(args) != want {
		for _, a := range args {
			if strings.HasPrefix(a, "-") {
				return errorf("%w: dlq %s: flags go before the arguments (found %q after them)", errUsage, op, a)
			}
		}
		if op == "show" {
			return errorf("%w: dlq show takes one MESSAGE-ID", errUsage)
		}
		return errorf("%w: dlq %s takes no arguments", errUsage, op)
	}
	switch {
	case f.timeout <= 0:
		return errorf("--timeout %v: must be positive", f.timeout)
	case f.limit < 0:
		return errorf("%w: --limit %d: must not be negative", errUsage, f.limit)
	case f.given["queue"] == f.given["topic"]:
		return errorf("%w: give --queue (RabbitMQ) or --topic (Kafka)", errUsage)
	case f.given["queue"] && f.queue == "":
		return errorf("%w: --queue: empty name", errUsage)
	case f.given["topic"] && f.topic == "":
		return errorf("%w: --topic: empty name", errUsage)
	case f.given["queue"] && f.given["kafka"]:
		return errorf("%w: --kafka is for --topic, not --queue", errUsage)
	case f.given["topic"] && f.given["amqp"]:
		return errorf("%w: --amqp is for --queue, not --topic", errUsage)
	case f.given["queue"] && f.given["from-offset"]:
		return errorf("%w: --from-offset is for Kafka (--topic)", errUsage)
	case f.given["queue"] && f.kafkaSecurity() != "":
		return errorf("%w: --%s is for Kafka (--topic); a RabbitMQ URL says amqps:// for TLS and holds the user", errUsage, f.kafkaSecurity())
	case f.given["via-exchange"] && !f.given["queue"]:
		return errorf("%w: --via-exchange is for RabbitMQ (--queue)", errUsage)
	case f.raw && (f.hexDump || f.asJSON):
		return errorf("%w: --raw writes the body alone: not with --hex or --json", errUsage)
	case f.hexDump && f.asJSON:
		return errorf("%w: --json holds the whole body: not with --hex", errUsage)
	}
	if err := f.checkKafkaSecurity(); err != nil {
		return err
	}
	if f.reRaw != "" {
		re, err := regexp.Compile(f.reRaw)
		if err != nil {
			return errorf("%w: --reason-regexp: %v", errUsage, err)
		}
		f.re = re
	}
	if f.fromOffset != "" {
		from, err := parseFromOffset(f.fromOffset)
		if err != nil {
			return errorf("%w: --from-offset %q: %v", errUsage, f.fromOffset, err)
		}
		f.from = from
	}
	if op == "redrive" && !f.all && !f.filtered() {
		return errorf("%w: dlq redrive needs a filter (--id, --reason, --reason-regexp, --from-offset) or --all", errUsage)
	}
	if op == "redrive" && f.all && (len(f.ids) > 0 || f.reason != "" || f.re != nil) {
		return errorf("%w: --all redrives every dead letter: not with --id, --reason or --reason-regexp", errUsage)
	}
	return nil
}

// filtered reports whether any filter was given.
func (f *dlqFlags) filtered() bool {
	return len(f.ids) > 0 || f.reason != "" || f.re != nil || f.from != nil
}

// parseFromOffset reads P:O,... into a map of partition to offset.
func parseFromOffset(s string) (map[int]int64, error) {
	out := map[int]int64{}
	for part := range strings.SplitSeq(s, ",") {
		p, o, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("%q is not PARTITION:OFFSET", part)
		}
		pn, err := strconv.Atoi(p)
		if err != nil || pn < 0 {
			return nil, fmt.Errorf("partition %q is not a number", p)
		}
		on, err := strconv.ParseInt(o, 10, 64)
		if err != nil || on < 0 {
			return nil, fmt.Errorf("offset %q is not a number", o)
		}
		if _, dup := out[pn]; dup {
			return nil, fmt.Errorf("partition %d given twice", pn)
		}
		out[pn] = on
	}
	return out, nil
}

// formatOffsets writes a partition-to-offset map as --from-offset reads it.
func formatOffsets(m map[int]int64) string {
	parts := make([]int, 0, len(m))
	for p := range m {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%d", p, m[p])
	}
	return b.String()
}

// source checks the broker flags and returns the function that connects
// to the dead-letter queue or topic they name.
func (f *dlqFlags) source(getenv func(string) string) (func(context.Context, io.Writer) (dlqSource, error), error) {
	if f.given["queue"] {
		src := "--amqp"
		if !f.given["amqp"] {
			f.amqp, src = getenv(envAMQP), envAMQP
			if f.amqp == "" {
				return nil, errorf("%w: no broker: give --amqp URL (or set %s)", errUsage, envAMQP)
			}
		}
		u, secrets, err := parseURL(src, f.amqp, "amqp", "amqps")
		if err != nil {
			return nil, err
		}
		f.secrets = secrets
		return func(ctx context.Context, stderr io.Writer) (dlqSource, error) {
			return openRabbit(ctx, f.amqp, redactURL(u), f.queue, stderr)
		}, nil
	}
	src := "--kafka"
	if !f.given["kafka"] {
		f.kafka, src = getenv(envKafka), envKafka
		if f.kafka == "" {
			return nil, errorf("%w: no brokers: give --kafka host:port,... (or set %s)", errUsage, envKafka)
		}
	}
	var brokers []string
	for b := range strings.SplitSeq(f.kafka, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(b); err != nil {
			return nil, errorf("%w: %s: %q is not host:port", errUsage, src, b)
		}
		brokers = append(brokers, b)
	}
	if len(brokers) == 0 {
		return nil, errorf("%w: %s: no broker address", errUsage, src)
	}
	sec, err := f.kafkaTransport(getenv)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, stderr io.Writer) (dlqSource, error) {
		return openKafka(ctx, brokers, f.topic, f.from, sec, stderr)
	}, nil
}

// scrubbed returns err with the URL's secrets masked in its message; the
// errors it wraps are kept.
func (f *dlqFlags) scrubbed(err error) error {
	if err == nil || len(f.secrets) == 0 {
		return err
	}
	return scrubbedError{err, f.secrets}
}

type scrubbedError struct {
	err     error
	secrets []string
}

func (e scrubbedError) Error() string { return scrub(e.err.Error(), e.secrets) }
func (e scrubbedError) Unwrap() error { return e.err }

// matches reports whether e passes the filters (--from-offset is applied by
// the Kafka source).
func (f *dlqFlags) matches(e *dlqEntry) bool {
	if len(f.ids) > 0 && !slices.ContainsFunc(f.ids, func(id string) bool { return sameID(id, e.MessageID) }) {
		return false
	}
	if f.reason != "" && !strings.Contains(e.Reason, f.reason) {
		return false
	}
	if f.re != nil && !f.re.MatchString(e.Reason) {
		return false
	}
	return true
}

// sameID compares message IDs, as UUIDs when both are.
func sameID(a, b string) bool {
	if a == b {
		return true
	}
	ua, errA := uuid.Parse(a)
	ub, errB := uuid.Parse(b)
	return errA == nil && errB == nil && ua == ub
}

// dlqSource is a dead-letter queue or topic.
type dlqSource interface {
	// describe names the queue or topic and where it is (URL redacted).
	describe() string
	// scan reads the dead letters in order and calls visit for each until
	// visit returns false or an error, or there are no more. Nothing read
	// is consumed unless redrive removed it.
	scan(ctx context.Context, visit func(*dlqEntry) (bool, error)) error
	// complete reads what the dead letter does not hold (the original of a
	// Kafka reference) into e, for show and redrive.
	complete(ctx context.Context, e *dlqEntry) error
	// redrive republishes e's original (with --via-exchange, to its
	// exchange) and, on RabbitMQ, removes the dead letter once the broker
	// confirmed it. It returns where the message went.
	redrive(ctx context.Context, e *dlqEntry, viaExchange bool) (string, error)
	// warn prints what the operator must know about the read on stderr.
	warn(stderr io.Writer)
	close()
}

// dlqEntry is one dead letter as the sources describe it.
type dlqEntry struct {
	// Pos is where the dead letter is: RabbitMQ, its position in the
	// queue when read (1 is the head); Kafka, partition:offset.
	Pos                                         string
	MessageID, CorrelationID, CausationID, Type string
	Reason                                      string
	Attempts                                    int
	// Form is plain, envelope, broker (RabbitMQ), reference (Kafka), or
	// "not a dead letter".
	Form string
	// The original destination: a RabbitMQ queue (and exchange and routing
	// key, when known), or a Kafka topic, partition and offset.
	Queue                string
	Exchange, RoutingKey *string
	Topic                string
	Partition            int
	Offset               int64
	Omitted              []string
	// Problem says why the dead letter cannot be redriven; "" when it can.
	Problem string

	// For show: the message's properties (RabbitMQ), headers, key (Kafka)
	// and body; BodyFrom names where a reference's body was read.
	Properties []dlqField
	Headers    []dlqField
	Key        []byte
	Body       []byte
	BodyFrom   string

	// state is the source's own.
	state any
}

// dlqField is a property or header: its name, its value for people and for
// JSON.
type dlqField struct {
	Name string
	Text string
	JSON any
}

// destination describes the original destination.
func (e *dlqEntry) destination() string {
	switch {
	case e.Topic != "":
		return fmt.Sprintf("topic %s partition %d offset %d", e.Topic, e.Partition, e.Offset)
	case e.Queue == "":
		return "unknown"
	case e.Exchange != nil && *e.Exchange != "":
		return fmt.Sprintf("queue %s (exchange %s, routing key %q)", e.Queue, *e.Exchange, deref(e.RoutingKey))
	}
	return "queue " + e.Queue
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// dlqJSON is the --json form of a dead letter.
type dlqJSON struct {
	DeadLetter    string   `json:"dead_letter"`
	Form          string   `json:"form"`
	MessageID     string   `json:"message_id"`
	CorrelationID string   `json:"correlation_id,omitempty"`
	CausationID   string   `json:"causation_id,omitempty"`
	Type          string   `json:"type,omitempty"`
	Reason        string   `json:"reason"`
	Attempts      int      `json:"attempts"`
	Queue         string   `json:"queue,omitempty"`
	Exchange      *string  `json:"exchange,omitempty"`
	RoutingKey    *string  `json:"routing_key,omitempty"`
	Topic         string   `json:"topic,omitempty"`
	Partition     *int     `json:"partition,omitempty"`
	Offset        *int64   `json:"offset,omitempty"`
	Omitted       []string `json:"omitted,omitempty"`
	Redrivable    bool     `json:"redrivable"`
	Problem       string   `json:"problem,omitempty"`
	// show only
	Properties map[string]any `json:"properties,omitempty"`
	Headers    any            `json:"headers,omitempty"`
	Key        []byte         `json:"key,omitempty"`
	Body       *[]byte        `json:"body,omitempty"`
	BodyFrom   string         `json:"body_from,omitempty"`
	// redrive only
	Action string `json:"action,omitempty"`
	To     string `json:"to,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (e *dlqEntry) json(full bool) *dlqJSON {
	j := &dlqJSON{DeadLetter: e.Pos, Form: e.Form, MessageID: e.MessageID, CorrelationID: e.CorrelationID,
		CausationID: e.CausationID, Type: e.Type, Reason: e.Reason, Attempts: e.Attempts, Queue: e.Queue,
		Exchange: e.Exchange, RoutingKey: e.RoutingKey, Topic: e.Topic, Omitted: e.Omitted,
		Redrivable: e.Problem == "", Problem: e.Problem}
	if e.Topic != "" {
		j.Partition, j.Offset = &e.Partition, &e.Offset
	}
	if full {
		if len(e.Properties) > 0 {
			j.Properties = map[string]any{}
			for _, p := range e.Properties {
				j.Properties[p.Name] = p.JSON
			}
		}
		j.Headers = headersJSON(e)
		j.Key, j.Body, j.BodyFrom = e.Key, &e.Body, e.BodyFrom
	}
	return j
}

// headersJSON is an object for RabbitMQ headers (names are unique) and a
// list of {"key", "value"} for Kafka's (which may repeat).
func headersJSON(e *dlqEntry) any {
	if len(e.Headers) == 0 {
		return nil
	}
	if e.Topic != "" {
		out := make([]map[string]any, len(e.Headers))
		for i, h := range e.Headers {
			out[i] = map[string]any{"key": h.Name, "value": h.JSON}
		}
		return out
	}
	out := map[string]any{}
	for _, h := range e.Headers {
		out[h.Name] = h.JSON
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// oneLine makes s fit a list line: control characters become spaces and it
// is cut to n runes.
func oneLine(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return oneLine(s, 80)
}

func dlqList(ctx context.Context, src dlqSource, f *dlqFlags, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if !f.asJSON {
		fmt.Fprintln(tw, "DEAD LETTER\tMESSAGE ID\tTYPE\tATTEMPTS\tFORM\tORIGINAL\tREASON")
	}
	read, shown := 0, 0
	err := src.scan(ctx, func(e *dlqEntry) (bool, error) {
		read++
		if !f.matches(e) {
			return true, nil
		}
		shown++
		if f.asJSON {
			if err := writeJSON(stdout, e.json(false)); err != nil {
				return false, err
			}
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.Pos, orDash(e.MessageID), orDash(e.Type), e.Attempts, e.Form,
				e.destination(), oneLine(e.Reason, reasonWidth))
		}
		return f.limit == 0 || shown < f.limit, nil
	})
	if !f.asJSON {
		tw.Flush()
		fmt.Fprintf(stdout, "%d of %d dead letters read from %s\n", shown, read, src.describe())
	}
	return err
}

func dlqShow(ctx context.Context, src dlqSource, f *dlqFlags, id string, stdout io.Writer) error {
	var found []*dlqEntry
	err := src.scan(ctx, func(e *dlqEntry) (bool, error) {
		if sameID(id, e.MessageID) {
			found = append(found, e)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if len(found) == 0 {
		if !f.raw && !f.asJSON {
			fmt.Fprintf(stdout, "no dead letter of message %s in %s\n", id, src.describe())
		}
		return errAbsent
	}
	if f.raw && len(found) > 1 {
		return errorf("%d dead letters of message %s in %s: --raw writes one body (--json holds each one's)", len(found), id, src.describe())
	}
	for i, e := range found {
		if err := src.complete(ctx, e); err != nil && e.Problem == "" {
			e.Problem = err.Error()
		}
		switch {
		case f.raw:
			if e.Body == nil && len(e.Omitted) > 0 {
				return errorf("dead letter %s: the body is not available: %s", e.Pos, e.Problem)
			}
			_, err := stdout.Write(e.Body)
			return err
		case f.asJSON:
			if err := writeJSON(stdout, e.json(true)); err != nil {
				return err
			}
		default:
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			printEntry(stdout, e, src, f.hexDump)
		}
	}
	return nil
}

// printEntry prints a dead letter in full, for people.
func printEntry(w io.Writer, e *dlqEntry, src dlqSource, hexDump bool) {
	fmt.Fprintf(w, "dead letter %s of %s\n", e.Pos, src.describe())
	row := func(name, value string) { fmt.Fprintf(w, "  %-15s %s\n", name+":", value) }
	row("form", e.Form)
	row("message ID", orDash(e.MessageID))
	row("correlation ID", orDash(e.CorrelationID))
	row("causation ID", orDash(e.CausationID))
	row("type", orDash(e.Type))
	row("attempts", strconv.Itoa(e.Attempts))
	row("original", e.destination())
	if len(e.Omitted) > 0 {
		row("omitted", strings.Join(e.Omitted, ", "))
	}
	if e.Problem == "" {
		row("redrive", "possible")
	} else {
		row("redrive", "refused: "+e.Problem)
	}
	fmt.Fprintln(w, "  reason:")
	for line := range strings.Lines(e.Reason) {
		fmt.Fprintf(w, "    %s\n", strings.TrimRight(line, "\n"))
	}
	if len(e.Properties) > 0 {
		fmt.Fprintln(w, "  properties:")
		for _, p := range e.Properties {
			fmt.Fprintf(w, "    %s: %s\n", p.Name, p.Text)
		}
	}
	if len(e.Headers) > 0 {
		fmt.Fprintln(w, "  headers:")
		for _, h := range e.Headers {
			fmt.Fprintf(w, "    %s: %s\n", h.Name, h.Text)
		}
	}
	if e.Key != nil {
		fmt.Fprintf(w, "  key: %s\n", quoteBytes(e.Key, 200))
	}
	from := ""
	if e.BodyFrom != "" {
		from = ", read from " + e.BodyFrom
	}
	switch {
	case e.Body == nil && len(e.Omitted) > 0:
		fmt.Fprintln(w, "  body: not available")
	case len(e.Body) == 0:
		fmt.Fprintf(w, "  body: empty%s\n", from)
	case hexDump:
		fmt.Fprintf(w, "  body: %d bytes%s:\n%s", len(e.Body), from, indent(hex.Dump(e.Body)))
	case utf8.Valid(e.Body) && printable(e.Body):
		shown := e.Body
		more := ""
		if len(shown) > previewBytes {
			cut := previewBytes
			for cut > 0 && !utf8.RuneStart(shown[cut]) {
				cut--
			}
			shown = shown[:cut]
			more = fmt.Sprintf("    … %d more bytes (--raw writes the body, --hex dumps it)\n", len(e.Body)-cut)
		}
		fmt.Fprintf(w, "  body: %d bytes of text%s:\n%s%s", len(e.Body), from, indent(string(shown)+"\n"), more)
	default:
		shown := e.Body[:min(len(e.Body), previewBytes/4)]
		more := ""
		if len(shown) < len(e.Body) {
			more = fmt.Sprintf("    … %d more bytes (--raw writes the body, --hex dumps it)\n", len(e.Body)-len(shown))
		}
		fmt.Fprintf(w, "  body: %d bytes, binary%s:\n%s%s", len(e.Body), from, indent(hex.Dump(shown)), more)
	}
}

func indent(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString("    ")
		b.WriteString(line)
	}
	return b.String()
}

// printable reports whether b is text a terminal shows as such.
func printable(b []byte) bool {
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

// quoteBytes quotes b, cut to n bytes.
func quoteBytes(b []byte, n int) string {
	if len(b) <= n {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%q… (%d bytes)", b[:n], len(b))
}

// redriveStats counts what redrive did.
type redriveStats struct{ matched, redriven, refused, failed int }

func dlqRedrive(ctx context.Context, src dlqSource, f *dlqFlags, stdout io.Writer) error {
	var st redriveStats
	verb := "redriven"
	if f.dryRun {
		verb = "would redrive"
	}
	report := func(e *dlqEntry, action, to string, err error) error {
		if f.asJSON {
			j := e.json(false)
			j.Action, j.To = action, to
			if err != nil {
				j.Error = err.Error()
			}
			return writeJSON(stdout, j)
		}
		switch {
		case err != nil && action == "refused":
			_, err = fmt.Fprintf(stdout, "refused  %s %s: %v\n", e.Pos, orDash(e.MessageID), err)
		case err != nil:
			_, err = fmt.Fprintf(stdout, "failed   %s %s: %v (the dead letter stays)\n", e.Pos, orDash(e.MessageID), err)
		default:
			_, err = fmt.Fprintf(stdout, "%s %s %s to %s\n", verb, e.Pos, orDash(e.MessageID), to)
		}
		return err
	}
	err := src.scan(ctx, func(e *dlqEntry) (bool, error) {
		if !f.matches(e) {
			return true, nil
		}
		st.matched++
		more := f.limit == 0 || st.matched < f.limit
		if e.Problem == "" {
			if err := src.complete(ctx, e); err != nil {
				e.Problem = err.Error()
			}
		}
		if e.Problem == "" && f.viaExchange && e.Exchange == nil {
			e.Problem = "the original exchange is not known (a plain dead letter names only its queue): redrive it without --via-exchange"
		}
		if e.Problem != "" {
			st.refused++
			return more, report(e, "refused", "", errors.New(e.Problem))
		}
		if f.dryRun {
			st.redriven++
			return more, report(e, "would-redrive", redriveTarget(e, f.viaExchange), nil)
		}
		to, err := src.redrive(ctx, e, f.viaExchange)
		if err != nil {
			st.failed++
			if rerr := report(e, "failed", "", err); rerr != nil {
				return false, rerr
			}
			var fatal fatalError
			if errors.As(err, &fatal) {
				return false, err
			}
			return more, nil
		}
		st.redriven++
		return more, report(e, "redriven", to, nil)
	})
	var next string
	if k, ok := src.(*kafkaSource); ok && !f.dryRun {
		next = formatOffsets(k.resume())
	}
	if f.asJSON {
		sum := map[string]any{"action": "summary", "matched": st.matched, "redriven": st.redriven,
			"refused": st.refused, "failed": st.failed, "dry_run": f.dryRun}
		if next != "" {
			sum["from_offset"] = next
		}
		if werr := writeJSON(stdout, sum); werr != nil && err == nil {
			err = werr
		}
	} else {
		fmt.Fprintf(stdout, "%s %d, refused %d, failed %d of %d matching dead letters in %s\n",
			verb, st.redriven, st.refused, st.failed, st.matched, src.describe())
		if next != "" {
			fmt.Fprintf(stdout, "to continue after these: --from-offset %s\n", next)
		}
	}
	switch {
	case err != nil:
		return err
	case st.matched == 0:
		return errAbsent
	case st.refused+st.failed > 0:
		return errorf("%d of %d matching dead letters not redriven", st.refused+st.failed, st.matched)
	}
	return nil
}

// redriveTarget says where redrive would publish e.
func redriveTarget(e *dlqEntry, viaExchange bool) string {
	switch {
	case e.Topic != "":
		return fmt.Sprintf("topic %s partition %d", e.Topic, e.Partition)
	case viaExchange && deref(e.Exchange) != "":
		return fmt.Sprintf("exchange %s with routing key %q", *e.Exchange, deref(e.RoutingKey))
	case viaExchange:
		return fmt.Sprintf("the default exchange with routing key %q", deref(e.RoutingKey))
	}
	return "queue " + e.Queue
}

// fatalError marks a redrive failure after which no other dead letter can
// be redriven (the connection is gone).
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }
