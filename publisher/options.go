package publisher

import (
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults of the options declared in this package.
const (
	// DefaultMinBackoff is the first wait before publishing a message again.
	DefaultMinBackoff = 20 * time.Millisecond
	// DefaultMaxBackoff is the longest wait between two attempts.
	DefaultMaxBackoff = 2 * time.Second
)

// Option configures a publisher. The options shared by every transport are
// declared in this package; a transport's own options (rabbitpub.WithExchange,
// kafkapub.WithAcks, ...) are of the same type, built with
// [TransportOption], so one list configures the whole publisher. The
// transport's New applies them in order and returns the first error, naming
// the option.
type Option func(*Settings) error

// Settings holds what the options set, with defaults filled in. Transports
// read it after [Apply]; users change it only through options. Once Apply
// returned it is only read, so it may be read concurrently.
type Settings struct {
	// MinBackoff and MaxBackoff bound the exponential wait between attempts
	// (defaults [DefaultMinBackoff] and [DefaultMaxBackoff]). The context of
	// each call bounds the attempts.
	MinBackoff, MaxBackoff time.Duration
	// MaxBodySize is the largest body accepted, in bytes (0: the
	// transport's default).
	MaxBodySize int
	// Observer receives publish events; nil when none was given.
	Observer Observer

	transport any    // a pointer to the transport's own configuration
	name      string // the transport's package name, for errors
}

// Apply returns the settings opts describe for the transport called name,
// whose own configuration cfg (a pointer) receives the options built with
// [TransportOption]. Transports call it once, in New.
func Apply(name string, cfg any, opts []Option) (Settings, error) {
	s := Settings{MinBackoff: DefaultMinBackoff, MaxBackoff: DefaultMaxBackoff, transport: cfg, name: name}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&s); err != nil {
			return Settings{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	if s.MinBackoff > s.MaxBackoff {
		return Settings{}, fmt.Errorf("%s: WithBackoff: minimum %v above maximum %v", name, s.MinBackoff, s.MaxBackoff)
	}
	return s, nil
}

// TransportOption returns an Option that applies f to the configuration of
// the transport whose configuration type is T. name (e.g.
// "rabbitpub.WithExchange") appears in errors, including the one returned
// when the option is given to another transport.
func TransportOption[T any](name string, f func(*T) error) Option {
	return func(s *Settings) error {
		cfg, ok := s.transport.(*T)
		if !ok {
			return fmt.Errorf("%s is not an option of %s", name, s.name)
		}
		if err := f(cfg); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
}

// WithBackoff bounds the exponential wait between attempts to publish a
// message again. Default: [DefaultMinBackoff] to [DefaultMaxBackoff]. The
// context given to Publish bounds the attempts; there is no other limit.
// Both bounds must be positive and min at most max. It conflicts with no
// other option; given several times, the last one wins.
func WithBackoff(min, max time.Duration) Option {
	return func(s *Settings) error {
		if min <= 0 || max <= 0 {
			return fmt.Errorf("WithBackoff(%v, %v): both bounds must be positive", min, max)
		}
		s.MinBackoff, s.MaxBackoff = min, max
		return nil
	}
}

// WithMaxBodySize sets the largest body accepted, in bytes; a larger one is
// rejected with [ErrInvalid] before anything is sent. Default: the
// transport's (rabbitpub.DefaultMaxBodySize, kafkapub.DefaultMaxBodySize);
// keep it at or below the broker's own limit. It conflicts with no other
// option; given several times, the last one wins.
func WithMaxBodySize(n int) Option {
	return func(s *Settings) error {
		if n < 1 {
			return fmt.Errorf("WithMaxBodySize(%d): must be at least 1", n)
		}
		s.MaxBodySize = n
		return nil
	}
}

// WithObserver sends publish events to o (metrics, tracing). Given several
// times, every observer receives every event, in order. Default: none. It
// conflicts with no other option.
func WithObserver(o Observer) Option {
	return func(s *Settings) error {
		if o == nil {
			return errors.New("WithObserver(nil)")
		}
		s.Observer = JoinObservers(s.Observer, o)
		return nil
	}
}

// NewBackOff returns a fresh exponential back-off between MinBackoff and
// MaxBackoff with no elapsed-time limit.
func (s *Settings) NewBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = s.MinBackoff
	b.MaxInterval = s.MaxBackoff
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}
