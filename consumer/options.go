package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/forge"
)

// Defaults of the options declared in this package.
const (
	// DefaultMaxAttempts is how often a failing message is handled before it
	// is dead-lettered.
	DefaultMaxAttempts = 5
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between
	// attempts and between reconnects.
	DefaultMinBackoff = 50 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	// DefaultShutdownTimeout is how long handlers in progress may run after
	// the consumer was asked to stop.
	DefaultShutdownTimeout = 30 * time.Second
)

// Option configures a consumer: the standard handler chain ([NewHandler])
// and the consumption loop of a transport (packages rabbitsub and kafkasub).
// The options shared by every transport are declared in this package; a
// transport's own options (rabbitsub.WithPrefetch, ...) are of the same
// type, built with [TransportOption], so one list configures the whole
// consumer. The transport's New applies them in order and returns the first
// error, naming the option.
type Option func(*Settings) error

// Settings holds what the options set, with defaults filled in. Transports
// read it after [Apply]; users change it only through options.
type Settings struct {
	// Store enables deduplication ([WithDedupe]); nil: none.
	Store dedupe.Store
	// Scope is the deduplication scope, the consumer's name or group.
	Scope string
	// Lease and Retention are passed to each claim and completion (0: the
	// store's defaults).
	Lease, Retention time.Duration
	// NoInbox makes a store that is a [dedupe.Inbox] be used as a plain
	// Store ([WithoutInbox]).
	NoInbox bool
	// Timeout bounds each handler call (0: no limit).
	Timeout time.Duration
	// Middleware wraps the handler inside the standard chain, outermost
	// first.
	Middleware []Middleware
	// VerifyIDs, when set, checks every message's ID against the keyed
	// derivation ([WithVerifiedIDs]).
	VerifyIDs *forge.Generator

	// MaxAttempts bounds the attempts for ordinary errors.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the waits between attempts.
	MinBackoff, MaxBackoff time.Duration
	// Generator computes content IDs for messages without an ID.
	Generator *forge.Generator
	// MissingID says what happens to a message without an ID.
	MissingID MissingIDPolicy
	// ShutdownTimeout is how long handlers in progress may run after the
	// consumer was asked to stop.
	ShutdownTimeout time.Duration
	// Logger receives the outcome of every delivery (see [LogObserver]).
	Logger *slog.Logger
	// Observer receives delivery events besides the logger; nil: none.
	Observer Observer

	transport any    // a pointer to the transport's own configuration
	name      string // the transport's package name, for errors
}

// Apply returns the settings opts describe for the transport (or component)
// called name, whose own configuration cfg (a pointer, or nil) receives the
// options built with [TransportOption]. Transports call it once, in New.
func Apply(name string, cfg any, opts []Option) (Settings, error) {
	s := Settings{
		MaxAttempts:     DefaultMaxAttempts,
		MinBackoff:      DefaultMinBackoff,
		MaxBackoff:      DefaultMaxBackoff,
		ShutdownTimeout: DefaultShutdownTimeout,
		transport:       cfg,
		name:            name,
	}
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
	if s.Store != nil {
		def := dedupe.DefaultLease
		if dl, ok := s.Store.(dedupe.DefaultLeaser); ok && dl.DefaultLease() > 0 {
			def = dl.DefaultLease()
		}
		lease, err := dedupe.LeaseOrDefault(s.Lease, def)
		if err != nil {
			return Settings{}, fmt.Errorf("%s: WithLease: %w", name, err)
		}
		if s.Timeout > 0 && s.Timeout >= lease {
			return Settings{}, fmt.Errorf("%s: WithTimeout(%v) must be below the dedupe lease (%v): another consumer could claim the message while its handler still runs", name, s.Timeout, lease)
		}
	}
	if s.Generator == nil {
		g, err := forge.New(DefaultContentNamespace)
		if err != nil {
			return Settings{}, fmt.Errorf("%s: content generator: %w", name, err)
		}
		s.Generator = g
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	return s, nil
}

// TransportOption returns an Option that applies f to the configuration of
// the transport whose configuration type is T. name (e.g.
// "rabbitsub.WithPrefetch") appears in errors, including the one returned
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

// WithDedupe processes each message ID once per scope with store (see
// [Dedupe]): scope names this consumer (its group or queue), so two
// consumers of one message each process it once. Default: no
// deduplication.
func WithDedupe(store dedupe.Store, scope string) Option {
	return func(s *Settings) error {
		if store == nil {
			return errors.New("WithDedupe: nil store")
		}
		if err := (dedupe.Key{Scope: scope, ID: [16]byte{1}}).Validate(); err != nil {
			return fmt.Errorf("WithDedupe: scope %q: %w", scope, err)
		}
		s.Store, s.Scope = store, scope
		return nil
	}
}

// WithLease sets how long a claim is held before another consumer may take
// the message. Default: the store's ([dedupe.DefaultLease] for the stores of
// this module). It must exceed the handler's longest run ([WithTimeout]).
func WithLease(d time.Duration) Option {
	return func(s *Settings) error {
		if d <= 0 {
			return fmt.Errorf("WithLease(%v): must be positive", d)
		}
		s.Lease = d
		return nil
	}
}

// WithRetention sets how long a completed message is remembered as a
// duplicate. Default: the store's; [dedupe.Forever] keeps it, for replays of
// a whole topic, where the store supports it.
func WithRetention(d time.Duration) Option {
	return func(s *Settings) error {
		if d <= 0 && d != dedupe.Forever {
			return fmt.Errorf("WithRetention(%v): must be positive or dedupe.Forever", d)
		}
		s.Retention = d
		return nil
	}
}

// WithoutInbox uses a store that implements [dedupe.Inbox] through its plain
// Claim / Complete / Release methods. Default: an Inbox runs the handler
// inside its transaction.
func WithoutInbox() Option {
	return func(s *Settings) error { s.NoInbox = true; return nil }
}

// WithTimeout gives each handler call at most d. Default: no limit. With
// deduplication, d must be below the lease.
func WithTimeout(d time.Duration) Option {
	return func(s *Settings) error {
		if d <= 0 {
			return fmt.Errorf("WithTimeout(%v): must be positive", d)
		}
		s.Timeout = d
		return nil
	}
}

// WithMiddleware adds mws to the standard chain between the timeout and
// panic recovery (see [NewHandler]): inside deduplication and the timeout,
// so they run once per attempt, and around the handler and the recovery
// that wraps it. Given several times, the middlewares add up, outermost
// first. Default: none. With [WithDedupe], a [Retry] given here would
// retry under one claim and a [Dedupe] of the same scope would wait for
// the outer claim forever: New refuses both ([Check]). The transports
// retry by themselves ([WithMaxAttempts]).
func WithMiddleware(mws ...Middleware) Option {
	return func(s *Settings) error {
		for _, mw := range mws {
			if mw == nil {
				return errors.New("WithMiddleware: nil middleware")
			}
		}
		s.Middleware = append(s.Middleware, mws...)
		return nil
	}
}

// WithMaxAttempts sets how often a failing message is handled, in place and
// with backoff, before it is dead-lettered. Default: [DefaultMaxAttempts].
// Waiting for another consumer's lease or for the store does not count.
func WithMaxAttempts(n int) Option {
	return func(s *Settings) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		s.MaxAttempts = n
		return nil
	}
}

// WithBackoff bounds the exponential wait between attempts, between
// dead-letter writes and between reconnects. Default: [DefaultMinBackoff]
// to [DefaultMaxBackoff]; a min above max is an error from New.
func WithBackoff(min, max time.Duration) Option {
	return func(s *Settings) error {
		if min <= 0 || max <= 0 {
			return fmt.Errorf("WithBackoff(%v, %v): both bounds must be positive", min, max)
		}
		s.MinBackoff, s.MaxBackoff = min, max
		return nil
	}
}

// WithGenerator sets the generator of content IDs for messages that carry
// no ID. Default: forge.New([DefaultContentNamespace]). Every consumer of
// one scope must use the same one.
func WithGenerator(g *forge.Generator) Option {
	return func(s *Settings) error {
		if g == nil {
			return errors.New("WithGenerator(nil)")
		}
		s.Generator = g
		return nil
	}
}

// WithMissingID sets what happens to a message that carries no ID.
// Default: [MissingIDContent].
func WithMissingID(p MissingIDPolicy) Option {
	return func(s *Settings) error {
		if p != MissingIDContent && p != MissingIDDeadLetter {
			return fmt.Errorf("WithMissingID(%d): unknown policy", p)
		}
		s.MissingID = p
		return nil
	}
}

// WithShutdownTimeout sets how long handlers in progress may run after the
// consumer was asked to stop, before their context is cancelled too;
// cancelled work is not acknowledged. Default: [DefaultShutdownTimeout].
func WithShutdownTimeout(d time.Duration) Option {
	return func(s *Settings) error {
		if d < 0 {
			return fmt.Errorf("WithShutdownTimeout(%v): negative", d)
		}
		s.ShutdownTimeout = d
		return nil
	}
}

// WithLogger logs the outcome of every delivery on l (see [LogObserver]
// for what is logged at which level). Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(s *Settings) error {
		if l == nil {
			return errors.New("WithLogger(nil)")
		}
		s.Logger = l
		return nil
	}
}

// WithObserver sends delivery events to o (metrics, tracing). Given several
// times, every observer receives every event, in order. Default: none
// besides the logger.
func WithObserver(o Observer) Option {
	return func(s *Settings) error {
		if o == nil {
			return errors.New("WithObserver(nil)")
		}
		s.Observer = JoinObservers(s.Observer, o)
		return nil
	}
}

// WithVerifiedIDs checks that every message's ID is the one gen derives
// from the message's causation ID, type and key (or body), as the
// publishers do. Use it with a keyed generator (a secret shared by
// producers and consumers): nobody without the secret can then publish a
// message under the ID of a future legitimate one (ID squatting). A message
// whose ID does not match is dead-lettered with [ErrForgedID]; messages
// published with an explicit ID cannot pass, nor can messages without an
// ID, whatever [WithMissingID] says. Default: IDs are not checked.
func WithVerifiedIDs(gen *forge.Generator) Option {
	return func(s *Settings) error {
		if gen == nil {
			return errors.New("WithVerifiedIDs(nil)")
		}
		s.VerifyIDs = gen
		return nil
	}
}
