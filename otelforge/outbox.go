package otelforge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// BacklogFunc reports an outbox's backlog: how many messages wait to be
// relayed and how long the oldest of them has waited (0 when none waits).
//
// pgoutbox.Store.Backlog reports per destination ([]outbox.Backlog), so it
// is adapted by a small function: the sum of the Pending fields and the
// largest Age for the whole outbox, as backlogTotal in examples/orders
// does,
//
//	backlog := func(ctx context.Context) (int64, time.Duration, error) {
//		bl, err := store.Backlog(ctx)
//		if err != nil {
//			return 0, 0, err
//		}
//		var n int64
//		var oldest time.Duration
//		for _, b := range bl {
//			n += b.Pending
//			oldest = max(oldest, b.Age)
//		}
//		return n, oldest, nil
//	}
//
// or one [ObserveOutbox] per destination, each reporting its own entry and
// given [WithAttributes] naming the destination.
type BacklogFunc func(ctx context.Context) (count int64, oldest time.Duration, err error)

// ObserveOutbox registers two observable gauges fed by backlog, which is
// called once per collection of the meter provider ([WithMeterProvider];
// default: the global one) with the collection's context:
// uuidforge.outbox.backlog ({message}) and uuidforge.outbox.oldest_age (s).
// When backlog fails, that collection has no point for either gauge (rather
// than a stale or zero one) and the error is reported by the meter
// provider's reader: a periodic reader passes it to otel.Handle, a manual
// reader's Collect returns it. Give each outbox its own attributes with
// [WithAttributes] (for example attribute.String("uuidforge.outbox.name",
// "orders")) when a process registers several. Unregister the returned registration when the outbox
// is closed. backlog must be safe for concurrent use.
func ObserveOutbox(backlog BacklogFunc, opts ...Option) (metric.Registration, error) {
	if backlog == nil {
		return nil, errors.New("otelforge: ObserveOutbox: nil backlog function")
	}
	c, err := newConfig(kindOutbox, opts)
	if err != nil {
		return nil, err
	}
	m := c.meter()
	count, err := m.Int64ObservableGauge(MetricOutboxBacklog, metric.WithUnit("{message}"),
		metric.WithDescription("Number of messages in the outbox waiting to be relayed."))
	if err != nil {
		return nil, fmt.Errorf("otelforge: ObserveOutbox: %w", err)
	}
	oldest, err := m.Float64ObservableGauge(MetricOutboxOldest, metric.WithUnit("s"),
		metric.WithDescription("How long the oldest message in the outbox has waited to be relayed."))
	if err != nil {
		return nil, fmt.Errorf("otelforge: ObserveOutbox: %w", err)
	}
	opt := metric.WithAttributeSet(set(c.attrs))
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		n, age, err := backlog(ctx)
		if err != nil {
			return fmt.Errorf("otelforge: outbox backlog: %w", err)
		}
		o.ObserveInt64(count, n, opt)
		o.ObserveFloat64(oldest, age.Seconds(), opt)
		return nil
	}, count, oldest)
	if err != nil {
		return nil, fmt.Errorf("otelforge: ObserveOutbox: %w", err)
	}
	return reg, nil
}
