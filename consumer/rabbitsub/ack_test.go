package rabbitsub

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// channelModel is the broker's side of a channel: the deliveries it holds
// unacked, and which of them the consumer decided to ack (the others it
// hands back or rejects). It fails the test on any frame RabbitMQ would
// refuse or that settles a delivery otherwise than decided.
type channelModel struct {
	t           testing.TB
	outstanding map[uint64]bool // tag -> decided to ack
	frames      int
}

func (c *channelModel) settle(tag uint64, ack bool) {
	c.t.Helper()
	want, ok := c.outstanding[tag]
	if !ok {
		c.t.Fatalf("tag %d settled but not outstanding (RabbitMQ: unknown delivery tag)", tag)
	}
	if want != ack {
		c.t.Fatalf("tag %d acked %v, decided %v", tag, ack, want)
	}
	delete(c.outstanding, tag)
}

func (c *channelModel) Ack(tag uint64, multiple bool) error {
	c.frames++
	if _, ok := c.outstanding[tag]; !ok {
		c.t.Fatalf("ack of tag %d that is not outstanding", tag)
	}
	if !multiple {
		c.settle(tag, true)
		return nil
	}
	for t := range c.outstanding {
		if t <= tag {
			c.settle(t, true)
		}
	}
	return nil
}

func (c *channelModel) Nack(tag uint64, multiple, requeue bool) error {
	c.frames++
	if multiple {
		c.t.Fatal("multiple nack")
	}
	c.settle(tag, false)
	return nil
}

func (c *channelModel) Reject(tag uint64, requeue bool) error { return c.Nack(tag, false, requeue) }

// runAcker settles tags 1..n in batches (consecutive runs of tags, as
// workers take them), finishing the batches in a random order, each member
// acked or handed back at random: every delivery must end as decided,
// never by another batch's multiple ack.
func runAcker(t testing.TB, seed uint64, n, batch int) int {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	model := &channelModel{t: t, outstanding: map[uint64]bool{}}
	a := newAcker(model)
	var batches [][]uint64
	for tag := uint64(1); tag <= uint64(n); {
		size := 1 + r.IntN(batch)
		var b []uint64
		for range size {
			if tag > uint64(n) {
				break
			}
			model.outstanding[tag] = r.IntN(8) != 0 // mostly acks
			b = append(b, tag)
			tag++
		}
		batches = append(batches, b)
	}
	r.Shuffle(len(batches), func(i, j int) { batches[i], batches[j] = batches[j], batches[i] })
	for _, b := range batches {
		var acks []uint64
		for _, tag := range b {
			if model.outstanding[tag] {
				acks = append(acks, tag)
			} else if err := a.nack(tag, true); err != nil {
				t.Fatal(err)
			}
		}
		if len(acks) > 0 {
			if err := a.ack(acks...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(model.outstanding) != 0 {
		t.Fatalf("%d deliveries never settled", len(model.outstanding))
	}
	return model.frames
}

func TestAcker(t *testing.T) {
	for seed := range uint64(200) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runAcker(t, seed, 200, 32) })
	}
	// In order, one frame per batch of acks.
	model := &channelModel{t: t, outstanding: map[uint64]bool{}}
	a := newAcker(model)
	for tag := uint64(1); tag <= 64; tag++ {
		model.outstanding[tag] = true
	}
	for first := uint64(1); first <= 64; first += 16 {
		tags := make([]uint64, 16)
		for i := range tags {
			tags[i] = first + uint64(i)
		}
		if err := a.ack(tags...); err != nil {
			t.Fatal(err)
		}
	}
	if model.frames != 4 || len(model.outstanding) != 0 {
		t.Fatalf("%d frames for 4 batches in order (%d left), want 4", model.frames, len(model.outstanding))
	}
}

func FuzzAcker(f *testing.F) {
	f.Add(uint64(1), uint8(50), uint8(8))
	f.Add(uint64(7), uint8(1), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, n, batch uint8) {
		runAcker(t, seed, int(n), int(batch)+1)
	})
}
