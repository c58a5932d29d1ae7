package rabbitsub

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The guard reads the broker's frames before amqp091-go does. RabbitMQ
// accepts messages whose headers amqp091-go refuses to read (more than 8192
// entries in one table, tables nested deeper than 32, a content header
// within 8 bytes of frame_max): the client would close its connection on
// every delivery of such a message, which goes back to the head of its
// queue, forever. The guard replaces such a header table by a table holding
// only headerUnreadable, whose value is a random token, and keeps the raw
// table under that token; the consumer then dead-letters the message with
// its raw headers in an envelope. Every other frame passes unchanged.

// headerUnreadable names the header the guard puts in place of a header
// table the client cannot read. It never leaves the process: the dead
// letter carries the original table.
const headerUnreadable = "x-uuidforge-unreadable-headers"

// AMQP 0-9-1 frame layout.
const (
	frameHeader     = 2
	frameEnd        = 0xCE
	frameHeaderSize = 7 // type, channel, size; the frame-end byte follows the payload
	// contentFixed is a content header's class, weight, body size and
	// property flags.
	contentFixed = 2 + 2 + 8 + 2
	// maxBufferedHeader bounds the header frames the guard reads whole
	// while no frame_max is known (or none was negotiated); with one, the
	// bound is frame_max. A larger header frame (no broker sends one)
	// passes through unchanged, for the client to refuse.
	maxBufferedHeader = 1 << 20
)

// Property flags of the basic class, in wire order.
const (
	flagContentType     = 0x8000
	flagContentEncoding = 0x4000
	flagHeaders         = 0x2000
	flagDeliveryMode    = 0x1000
	flagPriority        = 0x0800
	flagCorrelationID   = 0x0400
	flagReplyTo         = 0x0200
	flagExpiration      = 0x0100
	flagMessageID       = 0x0080
	flagTimestamp       = 0x0040
	flagType            = 0x0020
	flagUserID          = 0x0010
	flagAppID           = 0x0008
	flagReserved1       = 0x0004
)

// unreadable is a header table the guard took out of a delivery.
type unreadable struct {
	raw    []byte // the table as received, its 4-byte length first
	reason string // why the client cannot read it
}

// guard is the state of one guarded connection. Safe for concurrent use.
type guard struct {
	frameMax atomic.Int64 // negotiated frame_max; 0 until known, or unlimited

	mu    sync.Mutex
	stash map[string]unreadable
}

// take returns and forgets the table the guard took out of d, if any.
func (g *guard) take(d *amqp.Delivery) (unreadable, bool) {
	if g == nil {
		return unreadable{}, false
	}
	token, ok := d.Headers[headerUnreadable].(string)
	if !ok {
		return unreadable{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	u, ok := g.stash[token]
	delete(g.stash, token)
	return u, ok
}

// inspect returns frame (a whole header frame, framing included), or a
// copy whose header table is replaced when the client cannot read it.
func (g *guard) inspect(frame []byte) []byte {
	if frame[len(frame)-1] != frameEnd {
		return frame
	}
	payload := frame[frameHeaderSize : len(frame)-1]
	start, end, ok := headerTable(payload)
	if !ok || start == end {
		return frame
	}
	var reason string
	if fm := g.frameMax.Load(); fm > 0 && int64(len(payload)) > fm-8 {
		reason = fmt.Sprintf("content header of %d bytes exceeds the negotiated frame_max of %d", len(frame), fm)
	} else if _, err := readTable(bytes.NewReader(payload[start:end]), clientLimits()); err != nil {
		reason = describeTableError(err)
	}
	if reason == "" {
		return frame
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	repl, err := appendTable(nil, amqp.Table{headerUnreadable: token})
	if err != nil {
		return frame
	}
	out := make([]byte, 0, len(frame)-(end-start)+len(repl))
	out = append(out, frame[:frameHeaderSize+start]...)
	out = append(out, repl...)
	out = append(out, frame[frameHeaderSize+end:]...)
	binary.BigEndian.PutUint32(out[3:7], uint32(len(out)-frameHeaderSize-1))
	g.mu.Lock()
	if g.stash == nil {
		g.stash = map[string]unreadable{}
	}
	g.stash[token] = unreadable{raw: bytes.Clone(payload[start:end]), reason: reason}
	g.mu.Unlock()
	return out
}

// headerTable returns where the header table lies in a content header's
// payload (start == end: none), and whether the payload is well formed as
// amqp091-go reads it; a malformed one is left alone.
func headerTable(p []byte) (start, end int, ok bool) {
	if len(p) < contentFixed {
		return 0, 0, false
	}
	flags := binary.BigEndian.Uint16(p[contentFixed-2:])
	i := contentFixed
	shortstr := func() bool {
		if i >= len(p) || i+1+int(p[i]) > len(p) {
			return false
		}
		i += 1 + int(p[i])
		return true
	}
	fixed := func(n int) bool {
		if i+n > len(p) {
			return false
		}
		i += n
		return true
	}
	for _, f := range []uint16{flagContentType, flagContentEncoding, flagHeaders, flagDeliveryMode,
		flagPriority, flagCorrelationID, flagReplyTo, flagExpiration, flagMessageID, flagTimestamp,
		flagType, flagUserID, flagAppID, flagReserved1} {
		if flags&f == 0 {
			continue
		}
		good := true
		switch f {
		case flagHeaders:
			if i+4 > len(p) {
				return 0, 0, false
			}
			n := binary.BigEndian.Uint32(p[i:])
			if int64(n) > int64(len(p)-i-4) {
				return 0, 0, false
			}
			start, end = i, i+4+int(n)
			i = end
		case flagDeliveryMode, flagPriority:
			good = fixed(1)
		case flagTimestamp:
			good = fixed(8)
		default:
			good = shortstr()
		}
		if !good {
			return 0, 0, false
		}
	}
	return start, end, true
}

// guardConn passes a connection's bytes to amqp091-go, header frames
// through the guard. Read is called by the client's one reader goroutine;
// the rest is the underlying connection's.
type guardConn struct {
	net.Conn
	g    *guard
	r    *bufio.Reader
	hdr  [frameHeaderSize]byte
	buf  []byte // the current header frame, reused
	out  []byte // bytes of the current frame not yet returned
	pass int64  // bytes of the current frame still to copy from r
}

func (c *guardConn) Read(p []byte) (int, error) {
	if len(c.out) > 0 {
		n := copy(p, c.out)
		c.out = c.out[n:]
		return n, nil
	}
	if c.pass > 0 {
		if int64(len(p)) > c.pass {
			p = p[:c.pass]
		}
		n, err := c.r.Read(p)
		c.pass -= int64(n)
		return n, err
	}
	if _, err := io.ReadFull(c.r, c.hdr[:]); err != nil {
		return 0, err
	}
	size := binary.BigEndian.Uint32(c.hdr[3:7])
	limit := c.g.frameMax.Load()
	if limit <= 0 {
		limit = maxBufferedHeader
	}
	if c.hdr[0] != frameHeader || int64(size) > limit {
		c.out = c.hdr[:]
		c.pass = int64(size) + 1
		return c.Read(p)
	}
	need := frameHeaderSize + int(size) + 1
	if cap(c.buf) < need {
		c.buf = make([]byte, need)
	}
	frame := c.buf[:need]
	copy(frame, c.hdr[:])
	if _, err := io.ReadFull(c.r, frame[frameHeaderSize:]); err != nil {
		return 0, err
	}
	c.out = c.g.inspect(frame)
	return c.Read(p)
}

// dialGuarded connects to rawURL as amqp.DialConfig does, with the guard
// between the socket (or TLS) and the client, and registers the guard for
// the connection. Errors never contain the URL.
func (c *Consumer) dialGuarded(rawURL string, cfg amqp.Config) (*amqp.Connection, error) {
	uri, err := amqp.ParseURI(rawURL)
	if err != nil {
		return nil, errors.New("the URL does not parse") // its error would quote the password
	}
	if err := dialConfig(&cfg, rawURL, uri); err != nil {
		return nil, err
	}
	timeout := 30 * time.Second
	if uri.ConnectionTimeout > 0 {
		timeout = time.Duration(uri.ConnectionTimeout) * time.Millisecond
	}
	dial := cfg.Dial
	if dial == nil {
		dial = amqp.DefaultDial(timeout)
	}
	conn, err := dial("tcp", net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)))
	if err != nil {
		return nil, err
	}
	if uri.Scheme == "amqps" {
		tc, err := tlsConfig(cfg.TLSClientConfig, uri)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		tconn := tls.Client(conn, tc)
		if err := tconn.Handshake(); err != nil {
			_ = conn.Close()
			return nil, err
		}
		conn = tconn
	}
	g := &guard{}
	ac, err := amqp.Open(&guardConn{Conn: conn, g: g, r: bufio.NewReader(conn)}, cfg)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	g.frameMax.Store(int64(ac.Config.FrameSize))
	c.guards.Store(ac, g)
	return ac, nil
}

// dialConfig fills in cfg from the URL as amqp.DialConfig does.
func dialConfig(cfg *amqp.Config, rawURL string, uri amqp.URI) error {
	if cfg.Locale == "" {
		cfg.Locale = "en_US"
	}
	if cfg.SASL == nil {
		auth, err := saslFromURI(uri)
		if err != nil {
			return err
		}
		cfg.SASL = auth
	}
	if cfg.Vhost == "" {
		cfg.Vhost = uri.Vhost
	}
	// amqp.URI keeps the heartbeat query parameter unexported.
	if u, err := url.Parse(rawURL); err == nil && u.Query().Has("heartbeat") {
		s, err := strconv.ParseUint(u.Query().Get("heartbeat"), 10, 16)
		if err != nil {
			return errors.New("heartbeat is not an uint16")
		}
		cfg.Heartbeat = time.Duration(s) * time.Second
	} else if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.ChannelMax == 0 {
		cfg.ChannelMax = uri.ChannelMax
	}
	if cfg.FrameSize == 0 {
		cfg.FrameSize = 131072 // amqp091-go's default
	}
	return nil
}

func saslFromURI(uri amqp.URI) ([]amqp.Authentication, error) {
	if len(uri.AuthMechanism) == 0 {
		return []amqp.Authentication{uri.PlainAuth()}, nil
	}
	var auth []amqp.Authentication
	for _, m := range uri.AuthMechanism {
		switch strings.ToUpper(m) {
		case "PLAIN":
			auth = append(auth, uri.PlainAuth())
		case "AMQPLAIN":
			auth = append(auth, uri.AMQPlainAuth())
		case "EXTERNAL":
			auth = append(auth, &amqp.ExternalAuth{})
		default:
			return nil, fmt.Errorf("unsupported auth_mechanism %q", m)
		}
	}
	return auth, nil
}

// tlsConfig returns a copy of cfg (or one built from the URI's TLS
// parameters, as amqp091-go does) with the server name set.
func tlsConfig(cfg *tls.Config, uri amqp.URI) (*tls.Config, error) {
	if cfg != nil {
		cfg = cfg.Clone()
	} else {
		cfg = &tls.Config{ServerName: uri.ServerName, MinVersion: tls.VersionTLS12}
		if uri.CACertFile != "" {
			pem, err := os.ReadFile(uri.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("read CA certificate: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			cfg.RootCAs.AppendCertsFromPEM(pem)
		}
		if uri.CertFile != "" && uri.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(uri.CertFile, uri.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = uri.Host
	}
	return cfg, nil
}
