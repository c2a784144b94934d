package bench

import (
	"math"
	"time"
)

// Schedule is an open-loop send schedule: Rate publishes per second in total
// from Start, spread evenly over Gateways. Publish k of the whole run (k from
// 0) is due at Start + k/Rate and belongs to gateway k mod Gateways, so each
// gateway sends every Gateways/Rate seconds and the gateways are staggered
// by 1/Rate. The schedule never depends on when answers arrive: a slow
// answer delays nothing, and a publish sent late is measured from its due
// time (no coordinated omission).
type Schedule struct {
	Start    time.Time
	Rate     float64
	Gateways int
}

// At returns when gateway g (0 <= g < Gateways) is due to send its j-th
// publish (j from 0).
func (s Schedule) At(g, j int) time.Time {
	k := float64(j)*float64(s.Gateways) + float64(g)
	return s.Start.Add(time.Duration(math.Round(k / s.Rate * float64(time.Second))))
}

// Count returns how many publishes of gateway g are due before t.
func (s Schedule) Count(g int, t time.Time) int {
	if s.Rate <= 0 || s.Gateways <= 0 || !s.At(g, 0).Before(t) {
		return 0
	}
	x := t.Sub(s.Start).Seconds() * s.Rate // publishes of all gateways due before t
	j := int(math.Ceil((x - float64(g)) / float64(s.Gateways)))
	// Settle rounding at the edge exactly as At computes it.
	for j > 0 && !s.At(g, j-1).Before(t) {
		j--
	}
	for s.At(g, j).Before(t) {
		j++
	}
	return j
}
