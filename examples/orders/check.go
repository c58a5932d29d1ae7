package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/outbox"
	"github.com/uuidforge/uuidforge/outbox/pgoutbox"
)

// stored is what one store holds of an order; fields a store does not
// hold stay zero.
type stored struct {
	receipt
	status string // PostgreSQL: "placed" or "paid"
}

// mismatch is one store that does not hold what the business data says it
// should.
type mismatch struct {
	System, Entity, Expected, Actual string
}

type report struct {
	orders, consistent int
	mismatches         []mismatch
}

// field is one fact about an order that a store may hold.
type field struct {
	name string
	of   func(*stored) string
}

var (
	orderFields = []field{
		{"order id", func(s *stored) string { return s.ID.String() }},
		{"user_id", func(s *stored) string { return s.UserID.String() }},
		{"total_cents", func(s *stored) string { return fmt.Sprint(s.TotalCents) }},
		{"items", func(s *stored) string {
			var p []string
			for _, it := range s.Items {
				p = append(p, fmt.Sprintf("%s=%s×%d", it.SKU, it.ProductID, it.Quantity))
			}
			return "[" + strings.Join(p, " ") + "]"
		}},
		{"payment id", func(s *stored) string { return s.PaymentID.String() }},
		{"order.placed message id", func(s *stored) string { return s.OrderMessageID.String() }},
	}
	paymentMessageField = field{"payment.captured message id", func(s *stored) string { return s.PaymentMessageID.String() }}
	statusField         = field{"status", func(s *stored) string { return s.status }}
)

// expected computes, from the order's business data alone, every ID the
// stores must hold for it once it is paid.
func (s *shop) expected(ctx context.Context, o placedOrder) (*stored, error) {
	d, err := s.ids.doc(o)
	if err != nil {
		return nil, err
	}
	want := &stored{receipt: receipt{orderDoc: d}, status: "paid"}
	if want.PaymentID, err = s.ids.paymentID(d.ID); err != nil {
		return nil, err
	}
	if want.OrderMessageID, want.PaymentMessageID, err = s.ids.messageIDs(ctx, d); err != nil {
		return nil, err
	}
	return want, nil
}

// check is the consistency validator: for each order it regenerates the
// IDs from the business data alone and looks the order up in PostgreSQL,
// the outbox (the two messages it travelled as), Redis and the file store,
// printing one line per order and one per mismatch.
func (s *shop) check(ctx context.Context, orders []placedOrder, out io.Writer) (report, error) {
	var rep report
	for _, o := range orders {
		want, err := s.expected(ctx, o)
		if err != nil {
			return rep, err
		}
		rep.orders++
		var found []mismatch
		diff := func(system, entity string, expected, actual any) {
			if fmt.Sprint(expected) != fmt.Sprint(actual) {
				found = append(found, mismatch{system, entity, fmt.Sprint(expected), fmt.Sprint(actual)})
			}
		}
		compare := func(system string, got *stored, fields ...field) {
			if got == nil {
				diff(system, "order", want.ID, "missing")
				return
			}
			for _, f := range fields {
				diff(system, f.name, f.of(want), f.of(got))
			}
		}

		pg, err := s.fromPostgres(ctx, want.ID)
		if err != nil {
			return rep, err
		}
		compare("postgres", pg, append(orderFields, statusField)...)
		if err := s.checkOutbox(ctx, want, diff); err != nil {
			return rep, err
		}
		cached, err := s.fromRedis(ctx, want.ID)
		if err != nil {
			return rep, err
		}
		compare("redis "+s.cacheKey(want.ID), cached, append(orderFields, paymentMessageField)...)
		file, err := s.fromFile(want.ID)
		if err != nil {
			return rep, err
		}
		compare("file "+s.filePath(want.ID), file, append(orderFields, paymentMessageField)...)

		status := "found in postgres, outbox, redis and file"
		if len(found) == 0 {
			rep.consistent++
		} else {
			status = fmt.Sprintf("%d mismatches", len(found))
		}
		fmt.Fprintf(out, "check order %s of %s: expected %s, payment %s; %s\n", want.Number, want.Customer, want.ID, want.PaymentID, status)
		for _, m := range found {
			fmt.Fprintf(out, "  MISMATCH %s %s: expected %s, actual %s\n", m.System, m.Entity, m.Expected, m.Actual)
		}
		rep.mismatches = append(rep.mismatches, found...)
	}
	return rep, nil
}

// checkOutbox looks up the order's two messages in the outbox by the IDs
// computed from the business data: both dispatched, payment.captured caused
// by order.placed, and each carrying the order's ID.
func (s *shop) checkOutbox(ctx context.Context, want *stored, diff func(system, entity string, expected, actual any)) error {
	for _, m := range []struct {
		dest, typ string
		id        uuid.UUID
		cause     uuid.UUID
	}{
		{destOrders, typeOrderPlaced, want.OrderMessageID, uuid.Nil},
		{destPayments, typePaymentCaptured, want.PaymentMessageID, want.OrderMessageID},
	} {
		system := "outbox " + m.dest + " " + m.typ
		rec, err := s.outbox.Lookup(ctx, m.dest, m.id)
		if errors.Is(err, pgoutbox.ErrNotFound) {
			diff(system, "message "+m.id.String(), "dispatched", "missing")
			continue
		}
		if err != nil {
			return err
		}
		var body orderDoc
		if json.Unmarshal(rec.Body, &body) != nil {
			body = orderDoc{}
		}
		diff(system, "state", outbox.Dispatched, rec.State)
		diff(system, "causation id", m.cause, rec.CausationID)
		diff(system, "order id", want.ID, body.ID)
	}
	return nil
}

func (s *shop) fromPostgres(ctx context.Context, id uuid.UUID) (*stored, error) {
	var d stored
	var pid, mid *uuid.UUID
	err := s.pool.QueryRow(ctx, "SELECT o.id, o.user_id, o.customer, o.number, o.total_cents, o.status, p.id, p.message_id FROM "+
		s.table("orders")+" o LEFT JOIN "+s.table("payments")+" p ON p.order_id = o.id WHERE o.id = $1", id).
		Scan(&d.ID, &d.UserID, &d.Customer, &d.Number, &d.TotalCents, &d.status, &pid, &mid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read order %s: %w", id, err)
	}
	if pid != nil {
		d.PaymentID, d.OrderMessageID = *pid, *mid
	}
	rows, err := s.pool.Query(ctx, "SELECT product_id, sku, quantity, cents FROM "+s.table("order_items")+" WHERE order_id = $1 ORDER BY sku", id)
	if err != nil {
		return nil, fmt.Errorf("postgres: read items of %s: %w", id, err)
	}
	d.Items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (itemDoc, error) {
		var it itemDoc
		return it, r.Scan(&it.ProductID, &it.SKU, &it.Quantity, &it.Cents)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read items of %s: %w", id, err)
	}
	return &d, nil
}

func (s *shop) fromRedis(ctx context.Context, id uuid.UUID) (*stored, error) {
	b, err := s.rdb.Get(ctx, s.cacheKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis: get %s: %w", s.cacheKey(id), err)
	}
	return decodeReceipt(b), nil
}

func (s *shop) fromFile(id uuid.UUID) (*stored, error) {
	b, err := os.ReadFile(s.filePath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	return decodeReceipt(b), nil
}

// decodeReceipt decodes a stored receipt; an undecodable one is reported as
// a receipt with no fields, i.e. as mismatches, not as an error.
func decodeReceipt(b []byte) *stored {
	var r receipt
	if err := json.Unmarshal(b, &r); err != nil {
		return &stored{}
	}
	return &stored{receipt: r}
}
