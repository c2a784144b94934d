package main

import (
	"runtime/debug"
	"testing"
)

// TestServeTunesGC checks that serve raises GOGC to serveGCPercent only
// when the environment names neither GOGC nor GOMEMLIMIT.
func TestServeTunesGC(t *testing.T) {
	const base = 100
	old := debug.SetGCPercent(base)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int // the percent after tuneGC
	}{
		{name: "nothing set", env: nil, want: serveGCPercent},
		{name: "GOGC set", env: map[string]string{"GOGC": "50"}, want: base},
		{name: "GOGC off", env: map[string]string{"GOGC": "off"}, want: base},
		{name: "GOMEMLIMIT set", env: map[string]string{"GOMEMLIMIT": "2GiB"}, want: base},
		{name: "GOGC empty", env: map[string]string{"GOGC": ""}, want: serveGCPercent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(base)
			pct, set := tuneGC(func(k string) string { return tc.env[k] })
			got := debug.SetGCPercent(base)
			if got != tc.want {
				t.Fatalf("GOGC %d after tuneGC, want %d", got, tc.want)
			}
			if set != (tc.want == serveGCPercent) || (set && pct != serveGCPercent) {
				t.Fatalf("tuneGC = %d, %v", pct, set)
			}
		})
	}
}
