package rabbitpub_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
	"github.com/uuidforge/uuidforge/publisher"
	"github.com/uuidforge/uuidforge/publisher/rabbitpub"
)

// frameProxy sits between the publisher and RabbitMQ. It forwards the
// broker's frames one by one so that a test can inject frames between them
// (connection.blocked / unblocked, which RabbitMQ only sends under a
// broker-wide resource alarm) or stop forwarding altogether (a broker that
// hangs mid-connection).
type frameProxy struct {
	l       net.Listener
	backend string

	mu      sync.Mutex
	clients []*proxied
	frozen  bool
}

type proxied struct {
	client, server net.Conn
	wmu            sync.Mutex // serializes writes to client
}

func startProxy(t *testing.T, amqpURL string) (*frameProxy, string) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &frameProxy{l: l, backend: u.Host}
	go p.serve()
	t.Cleanup(p.close)
	u.Host = l.Addr().String()
	return p, u.String()
}

func (p *frameProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxied{client: c, server: s}
		p.mu.Lock()
		p.clients = append(p.clients, pc)
		p.mu.Unlock()
		go func() { // client -> server, raw
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					p.waitThawed()
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					s.Close()
					return
				}
			}
		}()
		go func() { // server -> client, frame by frame
			r := bufio.NewReader(s)
			for {
				hdr := make([]byte, 7)
				if _, err := io.ReadFull(r, hdr); err != nil {
					c.Close()
					return
				}
				if string(hdr[:4]) == "AMQP" { // protocol header reply; never for a 0-9-1 server
					c.Close()
					return
				}
				size := binary.BigEndian.Uint32(hdr[3:7])
				rest := make([]byte, int(size)+1)
				if _, err := io.ReadFull(r, rest); err != nil {
					c.Close()
					return
				}
				p.waitThawed()
				pc.wmu.Lock()
				_, err := c.Write(append(hdr, rest...))
				pc.wmu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
}

func (p *frameProxy) waitThawed() {
	for {
		p.mu.Lock()
		f := p.frozen
		p.mu.Unlock()
		if !f {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inject sends a connection-class method frame (channel 0) to every client.
func (p *frameProxy) inject(method uint16, args []byte) {
	payload := binary.BigEndian.AppendUint16(nil, 10) // class connection
	payload = binary.BigEndian.AppendUint16(payload, method)
	payload = append(payload, args...)
	frame := []byte{1, 0, 0} // method frame, channel 0
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(payload)))
	frame = append(frame, payload...)
	frame = append(frame, 0xCE)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		c.wmu.Lock()
		c.client.Write(frame)
		c.wmu.Unlock()
	}
}

func (p *frameProxy) block() {
	reason := "low on memory (test)"
	p.inject(60, append([]byte{byte(len(reason))}, reason...)) // connection.blocked
}

func (p *frameProxy) unblock() { p.inject(61, nil) } // connection.unblocked

func (p *frameProxy) freeze(on bool) {
	p.mu.Lock()
	p.frozen = on
	p.mu.Unlock()
}

func (p *frameProxy) close() {
	p.l.Close()
	p.freeze(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		c.client.Close()
		c.server.Close()
	}
}

// TestBlockedConnectionRespectsContext: while the broker blocks the
// connection, a publish sends nothing and returns when its context ends;
// once unblocked, publishing works again.
func TestBlockedConnectionRespectsContext(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, ch := declareQueue(t, url)
	proxy, proxyURL := startProxy(t, url)
	p := newPublisher(t, proxyURL, toQueue(q))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"before"}}); err != nil {
		t.Fatal(err)
	}
	proxy.block()
	time.Sleep(200 * time.Millisecond) // let the client read the frame

	for name, publish := range map[string]func(ctx2 contextT) error{
		"single": func(ctx2 contextT) error { return p.Publish(ctx2, publisher.Message{Type: "t", Key: []any{"blocked"}}) },
		"batch": func(ctx2 contextT) error {
			return p.PublishBatch(ctx2, publisher.Message{Type: "t", Key: []any{"blocked-1"}}, publisher.Message{Type: "t", Key: []any{"blocked-2"}})
		},
	} {
		ctx2, cancel := withTimeout(ctx, 300*time.Millisecond)
		start := time.Now()
		err := publish(ctx2)
		cancel()
		if !errors.Is(err, errDeadline) || !strings.Contains(err.Error(), "blocked") {
			t.Errorf("%s: Publish on a blocked connection = %v, want a deadline error naming the block", name, err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("%s: returned after %v", name, el)
		}
	}
	if ids := drain(t, ch, q); len(ids) != 1 {
		t.Errorf("%d messages in the queue, want only the one published before the block", len(ids))
	}
	proxy.unblock()
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"after"}}); err != nil {
		t.Fatalf("after unblock: %v", err)
	}
}

// TestHungBrokerRespectsContext: the broker stops answering mid-connection
// (no confirm, no close); a publish returns when its context ends.
func TestHungBrokerRespectsContext(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, _ := declareQueue(t, url)
	proxy, proxyURL := startProxy(t, url)
	p := newPublisher(t, proxyURL, toQueue(q))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"before"}}); err != nil {
		t.Fatal(err)
	}
	proxy.freeze(true)
	ctx2, cancel := withTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Publish(ctx2, publisher.Message{Type: "t", Key: []any{"hung"}})
	if !errors.Is(err, errDeadline) {
		t.Errorf("Publish to a hung broker = %v, want a deadline error", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("returned after %v", el)
	}
	proxy.freeze(false)
}

// TestConfirmTimeoutRepublishes: with the broker silent after accepting a
// publishing, each attempt times out waiting for its confirm and the message
// is published again, until the context ends.
func TestConfirmTimeoutRepublishes(t *testing.T) {
	url := testenv.AMQPURL(t)
	q, _ := declareQueue(t, url)
	proxy, proxyURL := startProxy(t, url)
	p := newPublisher(t, proxyURL, toQueue(q), rabbitpub.WithPoolSize(1), rabbitpub.WithConfirmTimeout(100*time.Millisecond))
	ctx := testenv.Context(t, 30*time.Second)
	if err := p.Publish(ctx, publisher.Message{Type: "t", Key: []any{"before"}}); err != nil {
		t.Fatal(err)
	}
	proxy.freeze(true)
	defer proxy.freeze(false)
	ctx2, cancel := withTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	err := p.Publish(ctx2, publisher.Message{Type: "t", Key: []any{"unconfirmed"}})
	var pe *publisher.PublishError
	if !errors.Is(err, errDeadline) || !errors.As(err, &pe) || pe.Attempts < 2 || !strings.Contains(err.Error(), "confirm timed out") {
		t.Fatalf("Publish = %v, want a deadline error after several confirm timeouts", err)
	}
	t.Log(err)
}
