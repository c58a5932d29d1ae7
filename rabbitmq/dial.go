package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrRefused marks a failure that retrying cannot fix: the broker refused
// the credentials (403 ACCESS_REFUSED) or the virtual host (530
// NOT_ALLOWED), the client and broker share no authentication mechanism, or
// the URL cannot parse. Publishers and consumers return such errors at once
// instead of retrying until their deadline.
var ErrRefused = errors.New("rabbitmq: refused")

// Endpoints dials one of several broker URLs — the nodes of one cluster —
// in turn: each Dial starts with the URL that last worked and, when that
// fails, tries the others in order, and after a Dial that reached none it
// starts one further on, so a client whose node went away reconnects to
// another one. Its fmt and %#v forms show only redacted URLs. It is safe
// for concurrent use.
type Endpoints struct {
	urls []string
	cfg  amqp.Config
	dial func(url string, cfg amqp.Config) (*amqp.Connection, error)

	mu   sync.Mutex
	next int
}

// NewEndpoints checks every URL ([ParseURL]) and returns Endpoints that
// dial them with cfg. cfg.Recovery must be nil: publishers and consumers
// recover connections themselves.
func NewEndpoints(urls []string, cfg amqp.Config) (*Endpoints, error) {
	if len(urls) == 0 {
		return nil, errors.New("rabbitmq: no URL")
	}
	for _, u := range urls {
		if err := ParseURL(u); err != nil {
			return nil, err
		}
	}
	if cfg.Recovery != nil {
		return nil, errors.New("rabbitmq: amqp.Config.Recovery must be nil: connections are recovered by the publisher or consumer")
	}
	return &Endpoints{urls: append([]string(nil), urls...), cfg: cfg, dial: amqp.DialConfig}, nil
}

// SetDialFunc replaces amqp.DialConfig (tests use it to keep or cut the
// connections made).
func (e *Endpoints) SetDialFunc(f func(url string, cfg amqp.Config) (*amqp.Connection, error)) {
	e.mu.Lock()
	e.dial = f
	e.mu.Unlock()
}

// URLs returns the URLs, redacted ([Redact]).
func (e *Endpoints) URLs() []string {
	out := make([]string, len(e.urls))
	for i, u := range e.urls {
		out[i] = Redact(u)
	}
	return out
}

// String lists the redacted URLs; the password never appears.
func (e *Endpoints) String() string { return strings.Join(e.URLs(), ",") }

// GoString is used by %#v: the redacted URLs, never the password.
func (e *Endpoints) GoString() string { return "rabbitmq.Endpoints(" + e.String() + ")" }

// Format makes every fmt verb print [Endpoints.String].
func (e *Endpoints) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, e.GoString())
		return
	}
	fmt.Fprint(f, e.String())
}

// Dial connects to the first URL that accepts, trying each once, and
// returns the connection and the (redacted) URL it reached. A refusal
// ([ErrRefused]) is returned at once: every node of a cluster shares its
// users and virtual hosts. Otherwise the error joins each URL's failure.
// ctx bounds the whole attempt; a connection completed after ctx ended is
// closed.
func (e *Endpoints) Dial(ctx context.Context) (*amqp.Connection, string, error) {
	e.mu.Lock()
	start, dial := e.next, e.dial
	e.mu.Unlock()
	var errs []error
	for i := range e.urls {
		k := (start + i) % len(e.urls)
		conn, err := e.dialOne(ctx, dial, e.urls[k])
		if err == nil {
			e.mu.Lock()
			e.next = k
			e.mu.Unlock()
			return conn, Redact(e.urls[k]), nil
		}
		if errors.Is(err, ErrRefused) || ctx.Err() != nil {
			return nil, "", err
		}
		errs = append(errs, err)
	}
	e.mu.Lock()
	e.next = (start + 1) % len(e.urls)
	e.mu.Unlock()
	return nil, "", errors.Join(errs...)
}

func (e *Endpoints) dialOne(ctx context.Context, dial func(string, amqp.Config) (*amqp.Connection, error), url string) (*amqp.Connection, error) {
	type result struct {
		c   *amqp.Connection
		err error
	}
	res := make(chan result) // unbuffered: delivered only to a caller still waiting
	abandoned := make(chan struct{})
	go func() {
		c, err := dial(url, e.cfg)
		select {
		case res <- result{c, err}:
		case <-abandoned:
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, fmt.Errorf("rabbitmq: dial %s: %w", Redact(url), Classify(r.err))
		}
		return r.c, nil
	case <-ctx.Done():
		close(abandoned)
		// The dial may have finished at the same moment.
		select {
		case r := <-res:
			if r.c != nil {
				_ = r.c.Close()
			}
		default:
		}
		return nil, fmt.Errorf("rabbitmq: dial %s: %w", Redact(url), ctx.Err())
	}
}

// Classify returns err marked with [ErrRefused] when it is a refusal that
// retrying cannot fix (see ErrRefused), and err unchanged otherwise. A 530
// NOT_ALLOWED that reports a reached connection limit is not a refusal: it
// passes once other connections close.
func Classify(err error) error {
	if err == nil || errors.Is(err, ErrRefused) {
		return err
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch {
	case ae == amqp.ErrCredentials, ae == amqp.ErrVhost, ae == amqp.ErrSASL:
	case ae.Code == amqp.AccessRefused:
	case ae.Code == amqp.NotAllowed && !strings.Contains(strings.ToLower(ae.Reason), "limit"):
	default:
		return err
	}
	return &refusedError{err}
}

type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() + " (refused: not retried)" }
func (e *refusedError) Unwrap() []error {
	return []error{e.err, ErrRefused}
}

// ClassifyDeclaration marks err with [ErrRefused] when it is the broker's
// verdict on a declaration, one that declaring again cannot change: 406
// PRECONDITION_FAILED (the entity exists with other arguments), 404
// NOT_FOUND (a binding to a missing exchange), 403 ACCESS_REFUSED, 530
// NOT_ALLOWED. A lost connection or an internal error stays retryable.
// [Topology.Declare] uses it.
func ClassifyDeclaration(err error) error {
	var ae *amqp.Error
	if err == nil || errors.Is(err, ErrRefused) || !errors.As(err, &ae) || !ae.Server {
		return err
	}
	switch ae.Code {
	case amqp.PreconditionFailed, amqp.NotFound, amqp.AccessRefused, amqp.NotAllowed:
		return &refusedError{err}
	}
	return err
}
