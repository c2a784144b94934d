package gwstate

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gwproto"
)

// newTestTracker returns a Tracker without its writer, on a clock the test
// moves.
func newTestTracker(now *time.Time) *Tracker {
	return &Tracker{log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: func() time.Time { return *now }, m: map[gwKey]*entry{}}
}

// TestSeenAtMostOncePerSecond checks that uploads move a gateway's
// lastSeen at most once a second (issue 11: Seen runs for every publish),
// while connects, statuses and disconnects always do, without allocating.
func TestSeenAtMostOncePerSecond(t *testing.T) {
	const tenant, serial = "acme", "TSGW06ACM00000001"
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	now := start
	tr := newTestTracker(&now)
	lastSeen := func() time.Time {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.m[gwKey{tenant, serial}].state.LastSeen
	}
	tr.Connected(tenant, serial)
	steps := []struct {
		name    string
		advance time.Duration
		do      func()
		want    time.Duration // lastSeen - start
	}{
		{name: "seen at once", advance: 0, do: func() { tr.Seen(tenant, serial) }, want: 0},
		{name: "seen within the second", advance: 999 * time.Millisecond, do: func() { tr.Seen(tenant, serial) }, want: 0},
		{name: "seen a second later", advance: time.Millisecond, do: func() { tr.Seen(tenant, serial) }, want: time.Second},
		{name: "clock set back", advance: -time.Minute, do: func() { tr.Seen(tenant, serial) }, want: time.Second - time.Minute},
		{name: "clock forward again", advance: time.Minute, do: func() { tr.Seen(tenant, serial) }, want: time.Second},
		{name: "disconnected at once", advance: 10 * time.Millisecond, do: func() { tr.Disconnected(tenant, serial) }, want: 1010 * time.Millisecond},
		{name: "connected again", advance: 10 * time.Millisecond, do: func() { tr.Connected(tenant, serial) }, want: 1020 * time.Millisecond},
		{name: "status within the second", advance: 10 * time.Millisecond, do: func() { tr.Status(tenant, serial, gwproto.Status{}) }, want: 1030 * time.Millisecond},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		st.do()
		if got := lastSeen().Sub(start); got != st.want {
			t.Fatalf("%s: lastSeen at +%v, want +%v", st.name, got, st.want)
		}
	}
	// An upload right after a disconnect is not skipped: as before, it
	// brings the entry back (the disconnect's write still happens).
	tr.Disconnected(tenant, serial)
	tr.Seen(tenant, serial)
	if e := tr.m[gwKey{tenant, serial}]; e.gone || !e.urgent {
		t.Fatalf("an upload right after the disconnect: gone %v, urgent %v; want false, true", e.gone, e.urgent)
	}
	tr.Connected(tenant, serial)
	if a := testing.AllocsPerRun(100, func() { tr.Seen(tenant, serial) }); a != 0 {
		t.Errorf("Seen within the second: %v allocs per call, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { now = now.Add(time.Second); tr.Seen(tenant, serial) }); a != 0 {
		t.Errorf("Seen a second later: %v allocs per call, want 0", a)
	}
	// The map key joins no strings: a tenant id long enough that joining
	// it with the serial needs the heap costs nothing either.
	const long = "a-tenant-id-longer-than-thirty-two-bytes"
	tr.Connected(long, serial)
	if a := testing.AllocsPerRun(100, func() { now = now.Add(time.Second); tr.Seen(long, serial) }); a != 0 {
		t.Errorf("Seen of a long tenant id: %v allocs per call, want 0", a)
	}
}
