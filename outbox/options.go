package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of the relay's options.
const (
	// DefaultBatchSize is the most records a relay worker claims at once.
	DefaultBatchSize = 500
	// DefaultWorkers is the number of workers per destination.
	DefaultWorkers = 2
	// DefaultPollInterval is how often an idle worker looks for due
	// records without being woken: the fallback for lost notifications and
	// the wake-up of records whose back-off ended.
	DefaultPollInterval = time.Second
	// DefaultPublishTimeout bounds one PublishBatch call of the relay.
	DefaultPublishTimeout = 15 * time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait before a
	// failed record is tried again.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
)

// finishTimeout bounds the storing of a batch's outcome, which runs even
// when the relay is stopping.
const finishTimeout = 10 * time.Second

// Option configures a [Relay]; pass options to [NewRelay].
type Option func(*config) error

type config struct {
	batchSize      int
	workers        int
	poll           time.Duration
	publishTimeout time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	maxAttempts    int
	observer       Observer
	logger         *slog.Logger
}

func defaultConfig() config {
	return config{
		batchSize:      DefaultBatchSize,
		workers:        DefaultWorkers,
		poll:           DefaultPollInterval,
		publishTimeout: DefaultPublishTimeout,
		minBackoff:     DefaultMinBackoff,
		maxBackoff:     DefaultMaxBackoff,
	}
}

// WithBatchSize sets the most records a worker claims and publishes at
// once (at least 1). Default [DefaultBatchSize]. Each batch is one
// PublishBatch call per round (see [Relay]) and one transaction.
func WithBatchSize(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithBatchSize(%d): must be at least 1", n)
		}
		c.batchSize = n
		return nil
	}
}

// WithWorkers sets the number of workers per destination (at least 1).
// Default [DefaultWorkers]. Each busy worker holds one connection of the
// store's pool while it publishes.
func WithWorkers(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithWorkers(%d): must be at least 1", n)
		}
		c.workers = n
		return nil
	}
}

// WithPollInterval sets how often an idle worker looks for due records
// when nothing woke it. Default [DefaultPollInterval]. New records wake the
// workers at once when the store announces them ([Store.Listen]); polling
// finds records whose back-off ended and covers for lost announcements.
func WithPollInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithPollInterval(%v): must be positive", d)
		}
		c.poll = d
		return nil
	}
}

// WithPublishTimeout bounds each PublishBatch call. Default
// [DefaultPublishTimeout]. The publishers retry until their context ends;
// the records still unconfirmed then count a failed attempt and back off.
// The claimed records stay held (a transaction stays open) meanwhile.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("WithPublishTimeout(%v): must be positive", d)
		}
		c.publishTimeout = d
		return nil
	}
}

// WithBackoff bounds the wait before a failed record is tried again: min
// after the first failure, doubling with each failure up to max, each wait
// drawn between half and all of that value. Default [DefaultMinBackoff] to
// [DefaultMaxBackoff].
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) error {
		if min <= 0 || max <= 0 {
			return fmt.Errorf("WithBackoff(%v, %v): both bounds must be positive", min, max)
		}
		if min > max {
			return fmt.Errorf("WithBackoff(%v, %v): minimum above maximum", min, max)
		}
		c.minBackoff, c.maxBackoff = min, max
		return nil
	}
}

// WithMaxAttempts moves a record to the dead state after n failed attempts
// (n >= 1). Default: unlimited — a record fails again and again, at the
// maximum back-off, until it succeeds, is invalid or unroutable
// ([publisher.ErrInvalid], [publisher.ErrUnroutable]: dead at once) or is
// dealt with by hand. Later records of its key wait for it either way.
func WithMaxAttempts(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		c.maxAttempts = n
		return nil
	}
}

// WithObserver sends the relay's events to o (metrics). Given several
// times, every observer receives every event, in order. Default: none.
func WithObserver(o Observer) Option {
	return func(c *config) error {
		if o == nil {
			return errors.New("WithObserver(nil)")
		}
		c.observer = JoinObservers(c.observer, o)
		return nil
	}
}

// WithLogger logs failed attempts (warning), dead records (error) and store
// errors (warning) on l. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("WithLogger(nil)")
		}
		c.logger = l
		return nil
	}
}
