package rabbitsub

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// fakeBroker is the broker side of an in-memory AMQP 0-9-1 connection: just
// enough of the protocol to open a connection and a channel, start a
// consumer and send it deliveries whose frames the test writes byte for
// byte — including frames RabbitMQ would send but amqp091-go cannot read.
type fakeBroker struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func (f *fakeBroker) readFrame() (typ byte, payload []byte, err error) {
	var h [7]byte
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		return 0, nil, err
	}
	payload = make([]byte, binary.BigEndian.Uint32(h[3:])+1)
	if _, err := io.ReadFull(f.r, payload); err != nil {
		return 0, nil, err
	}
	return h[0], payload[:len(payload)-1], nil
}

// expect reads a method frame and checks its class and method.
func (f *fakeBroker) expect(class, method uint16) {
	f.t.Helper()
	typ, p, err := f.readFrame()
	if err != nil {
		f.t.Fatalf("waiting for method %d.%d: %v", class, method, err)
	}
	if typ != 1 || binary.BigEndian.Uint16(p) != class || binary.BigEndian.Uint16(p[2:]) != method {
		f.t.Fatalf("frame type %d payload %x, want method %d.%d", typ, p[:min(len(p), 8)], class, method)
	}
}

func frameBytes(typ byte, channel uint16, payload []byte) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, channel)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, frameEnd)
}

func (f *fakeBroker) write(typ byte, channel uint16, payload []byte) error {
	_, err := f.conn.Write(frameBytes(typ, channel, payload))
	return err
}

func (f *fakeBroker) method(channel, class, method uint16, args ...byte) {
	f.t.Helper()
	p := binary.BigEndian.AppendUint16(nil, class)
	p = binary.BigEndian.AppendUint16(p, method)
	if err := f.write(1, channel, append(p, args...)); err != nil {
		f.t.Fatal(err)
	}
}

func shortstr(s string) []byte { return append([]byte{byte(len(s))}, s...) }
func longstr(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

// dialFake opens a client connection to a fake broker that offers
// frameMax, with the guard between them when guarded; it returns the
// broker side, a consumer's deliveries and the guard.
func dialFake(t testing.TB, frameMax uint32, guarded bool) (*fakeBroker, <-chan amqp.Delivery, *amqp.Connection, *guard) {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	_ = server.SetDeadline(time.Now().Add(10 * time.Second))
	f := &fakeBroker{t: t, conn: server, r: bufio.NewReader(server)}
	var g *guard
	var rw io.ReadWriteCloser = client
	if guarded {
		g = &guard{}
		rw = &guardConn{Conn: client, g: g, r: bufio.NewReader(client)}
	}
	type opened struct {
		c   *amqp.Connection
		err error
	}
	done := make(chan opened, 1)
	go func() {
		c, err := amqp.Open(rw, amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: "u", Password: "p"}}, Vhost: "/", Locale: "en_US"})
		done <- opened{c, err}
	}()
	var proto [8]byte
	if _, err := io.ReadFull(f.r, proto[:]); err != nil || string(proto[:]) != "AMQP\x00\x00\x09\x01" {
		t.Fatalf("protocol header %q, %v", proto, err)
	}
	f.method(0, 10, 10, append(append([]byte{0, 9, 0, 0, 0, 0}, longstr("PLAIN")...), longstr("en_US")...)...)
	f.expect(10, 11)
	tune := binary.BigEndian.AppendUint16(nil, 0)
	tune = binary.BigEndian.AppendUint32(tune, frameMax)
	f.method(0, 10, 30, binary.BigEndian.AppendUint16(tune, 0)...)
	f.expect(10, 31)
	f.expect(10, 40)
	f.method(0, 10, 41, 0)
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if g != nil {
		g.frameMax.Store(int64(o.c.Config.FrameSize))
	}
	type chOpened struct {
		d   <-chan amqp.Delivery
		err error
	}
	chDone := make(chan chOpened, 1)
	go func() {
		ch, err := o.c.Channel()
		if err != nil {
			chDone <- chOpened{nil, err}
			return
		}
		d, err := ch.Consume("q", "t", false, false, false, false, nil)
		chDone <- chOpened{d, err}
	}()
	f.expect(20, 10)
	f.method(1, 20, 11, 0, 0, 0, 0)
	f.expect(60, 20)
	f.method(1, 60, 21, shortstr("t")...)
	c := <-chDone
	if c.err != nil {
		t.Fatal(c.err)
	}
	return f, c.d, o.c, g
}

// contentHeader returns a content header payload: the given property flags
// and property bytes, for a body of bodySize bytes.
func contentHeader(bodySize uint64, flags uint16, props []byte) []byte {
	p := binary.BigEndian.AppendUint16(nil, 60)
	p = binary.BigEndian.AppendUint16(p, 0)
	p = binary.BigEndian.AppendUint64(p, bodySize)
	p = binary.BigEndian.AppendUint16(p, flags)
	return append(p, props...)
}

// deliver sends a delivery with the given content header payload and body,
// then asks the client to close: it reports whether the client was still
// there to answer (it closes its connection on a frame it cannot read).
func (f *fakeBroker) deliver(header, body []byte, frameMax int) bool {
	f.t.Helper()
	return f.send(header, body, frameMax) && f.alive()
}

// send sends a delivery with the given content header payload and body.
func (f *fakeBroker) send(header, body []byte, frameMax int) bool {
	f.t.Helper()
	args := shortstr("t")
	args = binary.BigEndian.AppendUint64(args, 1)
	args = append(args, 0)
	args = append(args, shortstr("")...)
	args = append(args, shortstr("q")...)
	p := append(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, 60), 60), args...)
	var out []byte
	out = append(out, frameBytes(1, 1, p)...)
	out = append(out, frameBytes(2, 1, header)...)
	for len(body) > 0 {
		n := min(len(body), frameMax-8)
		out = append(out, frameBytes(3, 1, body[:n])...)
		body = body[n:]
	}
	_, err := f.conn.Write(out)
	return err == nil
}

// alive asks the client to close the connection and reports whether it
// answered.
func (f *fakeBroker) alive() bool {
	closeArgs := binary.BigEndian.AppendUint16(nil, 200)
	closeArgs = append(closeArgs, shortstr("bye")...)
	closeArgs = append(closeArgs, 0, 0, 0, 0)
	if _, err := f.conn.Write(frameBytes(1, 0, append([]byte{0, 10, 0, 50}, closeArgs...))); err != nil {
		return false
	}
	for {
		typ, p, err := f.readFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				f.t.Fatalf("the client neither answered nor closed: %v", err)
			}
			return false
		}
		if typ == 1 && len(p) >= 4 && binary.BigEndian.Uint16(p) == 10 {
			return binary.BigEndian.Uint16(p[2:]) == 51 // close-ok: alive; close: the client's own error
		}
	}
}

// clientReads reports whether amqp091-go reads a delivery whose header table
// has the given content (without its length).
func clientReads(t testing.TB, content []byte) bool {
	f, _, _, _ := dialFake(t, 131072, false)
	props := append(binary.BigEndian.AppendUint32(nil, uint32(len(content))), content...)
	return f.deliver(contentHeader(0, flagHeaders, props), nil, 131072)
}

func tableContent(t testing.TB, tab amqp.Table) []byte {
	t.Helper()
	b, err := appendTable(nil, tab)
	if err != nil {
		t.Fatal(err)
	}
	return b[4:]
}

func nestedTable(depth int) amqp.Table {
	t := amqp.Table{"leaf": "x"}
	for range depth - 1 {
		t = amqp.Table{"n": t}
	}
	return amqp.Table{"n": t}
}

func nestedArray(depth int) amqp.Table {
	var a any = "x"
	for range depth {
		a = []any{a}
	}
	return amqp.Table{"a": a}
}

func manyEntries(n int) amqp.Table {
	t := amqp.Table{}
	for i := range n {
		t[strconv.Itoa(i)] = true
	}
	return t
}

// tableSeeds are header table contents (without their length) on both
// sides of the client's limits, with the reader's quirks.
func tableSeeds(t testing.TB) map[string][]byte {
	dup := tableContent(t, manyEntries(clientMaxEntries))
	dup = append(dup, shortstr("0")...)
	dup = append(dup, 't', 1)
	arr := []any{}
	for range clientMaxEntries + 1 {
		arr = append(arr, true)
	}
	return map[string][]byte{
		"empty":                 {},
		"all types":             tableContent(t, amqp.Table{"b": true, "B": byte(1), "i8": int8(-1), "i16": int16(-2), "u16": uint16(3), "i32": int32(-4), "u32": uint32(5), "i64": int64(-6), "f32": float32(1.5), "f64": 2.5, "dec": amqp.Decimal{Scale: 2, Value: 314}, "ts": time.Unix(1700000000, 0), "s": "str", "x": []byte{0, 1}, "a": []any{"x", int32(1)}, "t": amqp.Table{"k": "v"}, "v": nil}),
		"depth 32":              tableContent(t, nestedTable(32)),
		"depth 33":              tableContent(t, nestedTable(33)),
		"array depth 32":        tableContent(t, nestedArray(32)),
		"array depth 33":        tableContent(t, nestedArray(33)),
		"8192 entries":          tableContent(t, manyEntries(clientMaxEntries)),
		"8193 entries":          tableContent(t, manyEntries(clientMaxEntries+1)),
		"8192 and a duplicate":  dup,
		"8193 array elements":   tableContent(t, amqp.Table{"a": arr}),
		"unknown type":          append(shortstr("k"), 'Z', 0),
		"truncated value":       append(shortstr("k"), 'I', 0, 0),
		"array ends early":      append(shortstr("a"), 'A', 0, 0, 0, 2, 'I', 0),
		"array of a short str":  append(shortstr("a"), 'A', 0, 0, 0, 5, 'S', 0, 0, 0, 9),
		"negative byte array":   append(shortstr("x"), 'x', 0xff, 0xff, 0xff, 0xff),
		"huge long string":      append(shortstr("s"), 'S', 0x80, 0, 0, 0),
		"array in nested table": append(shortstr("t"), append([]byte{'F', 0, 0, 0, 8}, append(shortstr("a"), 'A', 0, 0, 0, 1, 'I')...)...),
	}
}

// The guard's reader accepts exactly what amqp091-go's accepts: each seed
// is sent to a real client over an in-memory connection.
func TestTableReaderMatchesClient(t *testing.T) {
	for name, content := range tableSeeds(t) {
		t.Run(name, func(t *testing.T) {
			full := append(binary.BigEndian.AppendUint32(nil, uint32(len(content))), content...)
			_, err := readTable(bytes.NewReader(full), clientLimits())
			if got, want := err == nil, clientReads(t, content); got != want {
				t.Fatalf("guard reads it: %v (%v); amqp091-go reads it: %v", got, err, want)
			}
		})
	}
}

func FuzzTableReaderMatchesClient(f *testing.F) {
	for _, content := range tableSeeds(f) {
		if len(content) <= maxFuzzTable {
			f.Add(content)
		}
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		if len(content) > maxFuzzTable {
			return
		}
		full := append(binary.BigEndian.AppendUint32(nil, uint32(len(content))), content...)
		_, err := readTable(bytes.NewReader(full), clientLimits())
		if got, want := err == nil, clientReads(t, content); got != want {
			t.Fatalf("guard reads %x: %v (%v); amqp091-go: %v", content, got, err, want)
		}
	})
}

// With the guard, a delivery whose headers the client cannot read arrives
// with the token header instead, the guard holds the raw table, and the
// connection lives on; readable headers and bodies pass unchanged.
func TestGuard(t *testing.T) {
	body := bytes.Repeat([]byte("body."), 3000) // several body frames
	for name, content := range tableSeeds(t) {
		t.Run(name, func(t *testing.T) {
			const frameMax = 131072
			f, deliveries, _, g := dialFake(t, frameMax, true)
			props := append(binary.BigEndian.AppendUint32(nil, uint32(len(content))), content...)
			props = append(props, shortstr("msg-1")...)
			header := contentHeader(uint64(len(body)), flagHeaders|flagMessageID, props)
			if len(header) > frameMax-8 {
				t.Fatalf("content header of %d bytes does not fit in the fake broker's frames", len(header))
			}
			if !f.send(header, body, frameMax) {
				t.Fatal("the client closed its connection")
			}
			var d amqp.Delivery
			select {
			case d = <-deliveries:
			case <-time.After(5 * time.Second):
				t.Fatal("no delivery")
			}
			if !f.alive() {
				t.Fatal("the client closed its connection")
			}
			if !bytes.Equal(d.Body, body) || d.MessageId != "msg-1" {
				t.Fatalf("body of %d bytes, message ID %q", len(d.Body), d.MessageId)
			}
			_, readable := readTable(bytes.NewReader(props), clientLimits())
			u, taken := g.take(&d)
			if taken == (readable == nil) {
				t.Fatalf("readable %v, taken by the guard %v", readable, taken)
			}
			if taken {
				if !bytes.Equal(u.raw, props[:4+len(content)]) || u.reason == "" {
					t.Fatalf("raw table of %d bytes, want %d; reason %q", len(u.raw), 4+len(content), u.reason)
				}
				if _, again := g.take(&d); again {
					t.Fatal("taken twice")
				}
			} else {
				want, _ := readTable(bytes.NewReader(props), clientLimits())
				if !reflect.DeepEqual(d.Headers, want) && !(len(d.Headers) == 0 && len(want) == 0) {
					t.Fatalf("headers changed: %v, want %v", d.Headers, want)
				}
			}
		})
	}
}

// A content header within 8 bytes of frame_max is accepted by RabbitMQ but
// not by amqp091-go; the guard takes its headers out.
func TestGuardFrameMax(t *testing.T) {
	const frameMax = 4096
	for _, extra := range []int{-1, 0, 1, 8} {
		t.Run(fmt.Sprint(extra), func(t *testing.T) {
			pad := func() []byte {
				base := len(contentHeader(0, flagHeaders, tableWithPad(0)))
				return tableWithPad(frameMax - 8 - base + extra)
			}()
			header := contentHeader(0, flagHeaders, pad)
			tooLarge := len(header) > frameMax-8
			if extra > 0 != tooLarge {
				t.Fatalf("payload %d bytes, frame_max %d", len(header), frameMax)
			}
			f, _, _, _ := dialFake(t, frameMax, false)
			if got := f.deliver(header, nil, frameMax); got == tooLarge {
				t.Fatalf("client read a %d-byte content header with frame_max %d: %v", len(header), frameMax, got)
			}
			f, deliveries, _, g := dialFake(t, frameMax, true)
			if !f.send(header, nil, frameMax) {
				t.Fatal("the client closed its guarded connection")
			}
			d := <-deliveries
			if !f.alive() {
				t.Fatal("the client closed its guarded connection")
			}
			u, taken := g.take(&d)
			if taken != tooLarge || (taken && !strings.Contains(u.reason, "frame_max")) {
				t.Fatalf("taken %v (reason %q), want %v", taken, u.reason, tooLarge)
			}
		})
	}
}

func tableWithPad(n int) []byte {
	b, err := appendTable(nil, amqp.Table{"pad": strings.Repeat("p", max(n, 0))})
	if err != nil {
		panic(err)
	}
	return b
}

// The writer and the reader agree: what appendTable writes reads back to
// the same table, and writing that again gives the same bytes.
// maxFuzzTable keeps fuzz inputs small: the tables over the entry limits
// are checked by the tests above, and large inputs slow the fuzzer down.
const maxFuzzTable = 4096

func FuzzTableRoundTrip(f *testing.F) {
	for _, content := range tableSeeds(f) {
		if len(content) > maxFuzzTable {
			continue
		}
		f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(content))), content...))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		tab, err := readTable(bytes.NewReader(raw), envelopeLimits())
		if err != nil {
			return
		}
		enc, err := appendTable(nil, tab)
		if err != nil {
			t.Fatalf("cannot write what was read: %v", err)
		}
		again, err := readTable(bytes.NewReader(enc), envelopeLimits())
		if err != nil {
			t.Fatalf("cannot read what was written: %v", err)
		}
		enc2, err := appendTable(nil, again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the table: %v", err)
		}
	})
}

func TestDescribeTableError(t *testing.T) {
	for err, want := range map[error]string{
		io.EOF:              "truncated",
		io.ErrUnexpectedEOF: "truncated",
		errors.New("other"): "other",
	} {
		if got := describeTableError(err); !strings.Contains(got, want) {
			t.Errorf("describeTableError(%v) = %q", err, got)
		}
	}
}

// The guard passes any byte stream through unchanged, in reads of any
// size, unless it rewrites a header frame: then only that frame differs.
func FuzzGuardStream(f *testing.F) {
	poison := contentHeader(0, flagHeaders, append(binary.BigEndian.AppendUint32(nil, 4), shortstr("k")[0], 'k', 'Z', 0))
	readable := contentHeader(5, flagHeaders|flagMessageID, append(tableWithPad(10), shortstr("m")...))
	f.Add(append(frameBytes(2, 1, readable), frameBytes(3, 1, []byte("hello"))...), byte(3))
	f.Add(append(frameBytes(1, 0, []byte{0, 10, 0, 50}), frameBytes(2, 1, poison)...), byte(1))
	f.Add([]byte{2, 0, 1, 0xff, 0xff, 0xff, 0xff}, byte(7))
	f.Fuzz(func(t *testing.T, stream []byte, step byte) {
		g := &guard{}
		c := &guardConn{g: g, r: bufio.NewReader(bytes.NewReader(stream))}
		var out []byte
		buf := make([]byte, int(step)%64+1)
		for {
			n, err := c.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				break
			}
		}
		if len(g.stash) == 0 && !bytes.HasPrefix(stream, out) {
			t.Fatalf("stream changed without a rewrite:\n in %x\nout %x", stream, out)
		}
		if len(g.stash) > 0 && bytes.Equal(stream, out) {
			t.Fatal("a header table was taken but the stream is unchanged")
		}
	})
}
