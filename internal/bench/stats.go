package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 <= p <= 100) of sorted, an
// ascending slice, by the nearest-rank method: the smallest sample such that
// at least p percent of all samples are less than or equal to it. p <= 0
// gives the minimum, p >= 100 the maximum, an empty slice 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 || math.IsNaN(p) {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	// Guard against p/100*n landing a hair above an integer through
	// floating point (for example 0.07*100 = 7.000000000000001).
	if r := float64(rank-1) * 100 / float64(n); rank > 1 && r >= p {
		rank--
	}
	return sorted[max(rank, 1)-1]
}

// LatencySummary is the distribution of publish-to-PUBACK latencies, in
// milliseconds.
type LatencySummary struct {
	Count  int     `json:"count"`
	MinMs  float64 `json:"min_ms"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summarize sorts samples in place and returns their distribution.
func Summarize(samples []time.Duration) LatencySummary {
	if len(samples) == 0 {
		return LatencySummary{}
	}
	slices.Sort(samples)
	var sum float64
	for _, s := range samples {
		sum += float64(s)
	}
	return LatencySummary{
		Count:  len(samples),
		MinMs:  ms(samples[0]),
		MeanMs: sum / float64(len(samples)) / float64(time.Millisecond),
		P50Ms:  ms(Percentile(samples, 50)),
		P90Ms:  ms(Percentile(samples, 90)),
		P99Ms:  ms(Percentile(samples, 99)),
		P999Ms: ms(Percentile(samples, 99.9)),
		MaxMs:  ms(samples[len(samples)-1]),
	}
}
