package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func seq(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p0", durations(7), 0, 7 * time.Millisecond},
		{"one sample p50", durations(7), 50, 7 * time.Millisecond},
		{"one sample p100", durations(7), 100, 7 * time.Millisecond},
		{"negative p is the minimum", durations(1, 2, 3), -5, time.Millisecond},
		{"p above 100 is the maximum", durations(1, 2, 3), 150, 3 * time.Millisecond},
		{"median of three", durations(1, 2, 3), 50, 2 * time.Millisecond},
		{"median of four is the lower middle", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of four", durations(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p25 of four", durations(1, 2, 3, 4), 25, time.Millisecond},
		{"p26 of four", durations(1, 2, 3, 4), 26, 2 * time.Millisecond},
		{"p90 of 1..10", seq(10), 90, 9 * time.Millisecond},
		{"p91 of 1..10", seq(10), 91, 10 * time.Millisecond},
		{"p7 of 1..100 (7.000000000000001 in floating point)", seq(100), 7, 7 * time.Millisecond},
		{"p50 of 1..100", seq(100), 50, 50 * time.Millisecond},
		{"p99 of 1..100", seq(100), 99, 99 * time.Millisecond},
		{"p99.9 of 1..1000", seq(1000), 99.9, 999 * time.Millisecond},
		{"p99.9 of 1..100 is the maximum", seq(100), 99.9, 100 * time.Millisecond},
		{"p99 of 1..1000", seq(1000), 99, 990 * time.Millisecond},
		{"p0.1 of 1..1000", seq(1000), 0.1, time.Millisecond},
		{"ties", durations(5, 5, 5, 9), 75, 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %g) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

// TestPercentileDefinition checks the nearest-rank definition itself on
// random data: the result is a sample, at least p% of samples are <= it,
// and fewer than p% are < it.
func TestPercentileDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		n := 1 + rng.IntN(300)
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(rng.IntN(50))
		}
		slices.Sort(s)
		for _, p := range []float64{0.1, 1, 10, 25, 50, 75, 90, 99, 99.9} {
			v := Percentile(s, p)
			le, lt := 0, 0
			for _, x := range s {
				if x <= v {
					le++
				}
				if x < v {
					lt++
				}
			}
			if float64(le)*100 < p*float64(n)-1e-9 || float64(lt)*100 >= p*float64(n) {
				t.Fatalf("n=%d p=%g: got %v with %d <= and %d < it", n, p, v, le, lt)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize(durations(4, 1, 3, 2))
	want := LatencySummary{Count: 4, MinMs: 1, MeanMs: 2.5, P50Ms: 2, P90Ms: 4, P99Ms: 4, P999Ms: 4, MaxMs: 4}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if (Summarize(nil) != LatencySummary{}) {
		t.Error("Summarize(nil) is not zero")
	}
}
