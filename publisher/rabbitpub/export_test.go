package rabbitpub

// Retries returns how many times p published a message again.
func Retries(p *Publisher) int64 { return p.retries.Load() }

// Settle waits until the broker has routed every message p sent so far:
// it takes every channel slot (so no publish is in progress) and makes a
// synchronous call on each open channel, which the broker answers only
// after the publishes it received on that channel before it. A publish
// whose caller gave up (its context ended) while its attempt was with the
// broker has thus been stored or refused when Settle returns.
func Settle(p *Publisher) error {
	held := make([]*slot, 0, cap(p.slots))
	defer func() {
		for _, s := range held {
			p.slots <- s
		}
	}()
	for range cap(p.slots) {
		s := <-p.slots
		held = append(held, s)
		if s.ch == nil {
			continue
		}
		if err := s.ch.ch.ExchangeDeclarePassive("amq.direct", "direct", true, false, false, false, nil); err != nil {
			return err
		}
	}
	return nil
}
