package kafkatest

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// listenFn returns the function the broker nodes listen with, nil when
// kfake's own (plain TCP) will do. With TLS the connections are TLS; with
// SASL each connection answers a failed authentication as Kafka does
// ([authConn]).
// stopping is set before the cluster closes: the connections it then
// closes are not refused authentications.
func (c *config) listenFn(stopping *atomic.Bool) func(network, address string) (net.Listener, error) {
	if c.tls == nil && len(c.users) == 0 {
		return nil
	}
	tc, sasl := c.tls, len(c.users) > 0
	return func(network, address string) (net.Listener, error) {
		l, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		if tc != nil {
			l = tls.NewListener(l, tc)
		}
		if sasl {
			l = authListener{l, stopping}
		}
		return l, nil
	}
}

type authListener struct {
	net.Listener
	stopping *atomic.Bool
}

func (l authListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &authConn{Conn: c, stopping: l.stopping}, nil
}

// authConn makes a failed SASL authentication look as it does on Kafka.
// kfake closes the connection of a client whose credentials it refuses,
// without an answer, which kafka-go reports as an unexpected EOF; Kafka
// first answers the SaslAuthenticate request with error 58,
// SASL_AUTHENTICATION_FAILED, which clients report as such (and do not
// retry). authConn follows the requests the client sends and the
// responses the broker writes, and when the broker closes the connection
// while a SaslAuthenticate request has no answer, it writes that answer.
type authConn struct {
	net.Conn
	stopping *atomic.Bool

	in  frameParser // client to broker
	out frameParser // broker to client

	mu        sync.Mutex
	mechanism string // of the last SaslHandshake request
	pending   bool   // a SaslAuthenticate request awaits its answer
	corr      int32  // its correlation ID
	version   int16  // its version
	closed    bool
}

// API keys of the requests authConn follows.
const (
	keySASLHandshake    = 17
	keySASLAuthenticate = 36
)

func (c *authConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.feed(p[:n], func(key, version int16, corr int32, body []byte) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch key {
		case keySASLHandshake:
			req := kmsg.NewPtrSASLHandshakeRequest()
			req.Version = version
			if req.ReadFrom(body) == nil {
				c.mechanism = req.Mechanism
			}
		case keySASLAuthenticate:
			c.pending, c.corr, c.version = true, corr, version
		}
	})
	return n, err
}

func (c *authConn) Write(p []byte) (int, error) {
	c.out.feedResponse(p, func(corr int32) {
		c.mu.Lock()
		if c.pending && corr == c.corr {
			c.pending = false
		}
		c.mu.Unlock()
	})
	return c.Conn.Write(p)
}

func (c *authConn) Close() error {
	c.mu.Lock()
	if !c.closed && c.pending && !c.stopping.Load() {
		c.pending = false
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		resp.Version = c.version
		resp.ErrorCode = 58 // SASL_AUTHENTICATION_FAILED
		msg := "Authentication failed: invalid credentials with SASL mechanism " + c.mechanism
		resp.ErrorMessage = &msg
		buf := binary.BigEndian.AppendUint32(make([]byte, 4, 64), uint32(c.corr))
		if resp.IsFlexible() {
			buf = append(buf, 0) // the response header's empty tagged fields
		}
		buf = resp.AppendTo(buf)
		binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
		_, _ = c.Conn.Write(buf) // best effort: the client may be gone
	}
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

// frameParser follows the size-prefixed frames of one direction of a
// Kafka connection, however the bytes are split across reads and writes.
type frameParser struct {
	head []byte // the frame's first bytes: size, then the header
	left int    // bytes of the current frame's body not seen yet
	body []byte // the body of a frame kept whole (SASL requests)
	keep bool
}

// feed follows requests: for each SASL request seen whole it calls f with
// its API key, version, correlation ID and the body after the header.
func (p *frameParser) feed(b []byte, f func(key, version int16, corr int32, body []byte)) {
	for len(b) > 0 {
		if p.left == 0 && !p.keep {
			// size (4), key (2), version (2), correlation ID (4)
			take := min(12-len(p.head), len(b))
			p.head, b = append(p.head, b[:take]...), b[take:]
			if len(p.head) < 12 {
				return
			}
			size := int(binary.BigEndian.Uint32(p.head))
			key := int16(binary.BigEndian.Uint16(p.head[4:]))
			p.left = size - 8
			p.keep = key == keySASLHandshake || key == keySASLAuthenticate
			p.body = p.body[:0]
			if p.left <= 0 {
				p.left, p.keep, p.head = 0, false, p.head[:0]
				continue
			}
		}
		take := min(p.left, len(b))
		if p.keep {
			p.body = append(p.body, b[:take]...)
		}
		p.left, b = p.left-take, b[take:]
		if p.left > 0 {
			return
		}
		if p.keep {
			key := int16(binary.BigEndian.Uint16(p.head[4:]))
			version := int16(binary.BigEndian.Uint16(p.head[6:]))
			corr := int32(binary.BigEndian.Uint32(p.head[8:]))
			f(key, version, corr, requestBody(key, version, p.body))
		}
		p.keep, p.head = false, p.head[:0]
	}
}

// requestBody skips the rest of a request header (client ID, and tagged
// fields in flexible versions) and returns the request's body.
func requestBody(key, version int16, b []byte) []byte {
	if len(b) < 2 {
		return nil
	}
	n := int(int16(binary.BigEndian.Uint16(b)))
	b = b[2:]
	if n > 0 {
		if n > len(b) {
			return nil
		}
		b = b[n:]
	}
	req := kmsg.RequestForKey(key)
	if req == nil {
		return nil
	}
	req.SetVersion(version)
	if req.IsFlexible() {
		// Tagged fields: a count, then (tag, size, data) each; SASL requests
		// carry none, so the count is a single 0 byte.
		if len(b) == 0 || b[0] != 0 {
			return nil
		}
		b = b[1:]
	}
	return b
}

// feedResponse follows responses: it calls f with the correlation ID of
// each response as its header goes by.
func (p *frameParser) feedResponse(b []byte, f func(corr int32)) {
	for len(b) > 0 {
		if p.left == 0 {
			take := min(8-len(p.head), len(b))
			p.head, b = append(p.head, b[:take]...), b[take:]
			if len(p.head) < 8 {
				return
			}
			p.left = int(binary.BigEndian.Uint32(p.head)) - 4
			f(int32(binary.BigEndian.Uint32(p.head[4:])))
			p.head = p.head[:0]
			continue
		}
		take := min(p.left, len(b))
		p.left, b = p.left-take, b[take:]
	}
}
