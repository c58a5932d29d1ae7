package consumer

import (
	"errors"
	"fmt"
)

// NewHandler wraps h in the standard chain that opts describe, in the one
// order that keeps every guarantee, outermost first:
//
//	Lineage                       (always: messages the handler publishes derive their IDs from m)
//	verified IDs                  ([WithVerifiedIDs])
//	Dedupe                        ([WithDedupe], [WithLease], [WithRetention], [WithoutInbox])
//	Timeout                       ([WithTimeout]; must be below the lease)
//	your middlewares              ([WithMiddleware], outermost first)
//	Recover                       (always)
//	h
//
// Retrying, dead-lettering and logging belong to the loop that runs the
// chain ([Processor], the transports), which take the same options. The
// transports call NewHandler themselves; use it to run a chain another way.
// It returns an error for invalid options and for a handler h that already
// contains a layer the chain would repeat wrongly (see [Check]).
func NewHandler(h Handler, opts ...Option) (Handler, error) {
	s, err := Apply("consumer", nil, opts)
	if err != nil {
		return nil, err
	}
	return s.Chain(h)
}

// Chain wraps h in the standard chain these settings describe (see
// [NewHandler]) and checks the result with [Check].
func (s *Settings) Chain(h Handler) (Handler, error) {
	if h == nil {
		return nil, fmt.Errorf("%s: nil handler", s.name)
	}
	mws := []Middleware{Lineage()}
	if s.VerifyIDs != nil {
		mws = append(mws, verifyIDs(s.VerifyIDs))
	}
	if s.Store != nil {
		mws = append(mws, dedupeMiddleware(s))
	}
	mws = append(mws, Timeout(s.Timeout))
	mws = append(mws, s.Middleware...)
	mws = append(mws, Recover())
	chain := Chain(mws...)(h)
	if err := Check(chain); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	return chain, nil
}

// ErrChainOrder is wrapped by the errors [Check] returns.
var ErrChainOrder = errors.New("consumer: middleware order breaks a guarantee")

// Check walks a handler chain built from this package's middlewares and
// returns an error wrapping [ErrChainOrder] when their order breaks a
// guarantee:
//
//   - [Retry] inside [Dedupe]: the retries run under one claim, and inside
//     an inbox transaction a failed attempt's writes would commit with the
//     successful one;
//   - two Dedupe layers of one scope: the inner one finds the outer one's
//     claim in flight and the message waits forever.
//
// Handlers it does not know (your own middlewares and handlers) end the
// walk: Check cannot see through them.
func Check(h Handler) error {
	var scopes []string
	inDedupe := false
	for h != nil {
		l, ok := h.(layer)
		if !ok {
			return nil
		}
		kind, next := l.layerInfo()
		switch kind {
		case layerDedupe:
			scope := dedupeScope(h)
			for _, s := range scopes {
				if s == scope {
					return fmt.Errorf("%w: two Dedupe layers of scope %q (the inner one would wait for the outer one's claim forever)", ErrChainOrder, scope)
				}
			}
			scopes = append(scopes, scope)
			inDedupe = true
		case layerRetry:
			if inDedupe {
				return fmt.Errorf("%w: Retry inside Dedupe (put it outside, so that each attempt claims afresh and an inbox never commits a failed attempt)", ErrChainOrder)
			}
		}
		h = next
	}
	return nil
}

func dedupeScope(h Handler) string {
	switch d := h.(type) {
	case *dedupeHandler:
		return d.scope
	case *inboxHandler:
		return d.scope
	}
	return ""
}
