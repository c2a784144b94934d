package forward

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestFloorIsEveryReceivedDone: the floor is the highest sequence with
// every one received up to it done, whatever order they are done in.
func TestFloorIsEveryReceivedDone(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    uint64
		received []uint64
		done     [][]uint64
		want     []uint64 // the floor after each done
	}{
		{name: "in order", start: 4, received: []uint64{5, 6, 7}, done: [][]uint64{{5}, {6}, {7}}, want: []uint64{5, 6, 7}},
		{name: "a later lane first", start: 0, received: []uint64{1, 2, 3, 4}, done: [][]uint64{{2, 4}, {3}, {1}}, want: []uint64{0, 0, 4}},
		{name: "gaps of other consumers", start: 10, received: []uint64{12, 15, 20}, done: [][]uint64{{15}, {12}, {20}}, want: []uint64{10, 15, 20}},
		{name: "one held back", start: 0, received: []uint64{1, 2, 3}, done: [][]uint64{{1}, {3}}, want: []uint64{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFloor(tc.start)
			for _, s := range tc.received {
				f.add(s)
			}
			var got []uint64
			for _, d := range tc.done {
				got = append(got, f.done(d...))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("floors %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLaneOfIsStable: a device always takes the same lane, and devices
// spread over the lanes.
func TestLaneOfIsStable(t *testing.T) {
	used := map[int]bool{}
	for i := range 64 {
		d := "TSEN01ABC" + string(rune('A'+i%26)) + "0000" + string(rune('0'+i/26)) + "00"
		l := laneOf(d, 8)
		if l < 0 || l >= 8 || laneOf(d, 8) != l {
			t.Fatalf("device %s: lane %d", d, l)
		}
		used[l] = true
	}
	if len(used) < 6 {
		t.Errorf("64 devices took only %d of 8 lanes", len(used))
	}
}

// TestLaneNextPacesOnlyABusyLane: an idle lane sends what it has at once;
// a busy one (its last batch started less than the pace ago) gathers
// until the pace is up or its batch is full, keeping the queue's order.
func TestLaneNextPacesOnlyABusyLane(t *testing.T) {
	const hour = time.Hour
	for _, tc := range []struct {
		name    string
		started time.Duration // before now (0: never)
		pace    time.Duration
		queued  int
		later   int // pushed once the lane has taken what was queued
		want    int
		waits   bool // at least the pace after the last start
	}{
		{name: "idle: one message at once", pace: hour, queued: 1, want: 1},
		{name: "idle long enough: at once", started: 2 * hour, pace: hour, queued: 2, want: 2},
		{name: "busy, full: at once", started: time.Millisecond, pace: hour, queued: 5, want: 5},
		{name: "busy: gathers until full", started: time.Millisecond, pace: hour, queued: 1, later: 4, want: 5},
		{name: "busy: gathers until the pace", started: time.Millisecond, pace: 300 * time.Millisecond, queued: 1, want: 1, waits: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &lane{w: &worker{}, i: 0, ready: make(chan struct{}, 1)}
			if tc.started > 0 {
				l.started = time.Now().Add(-tc.started)
			}
			last := l.started
			seq := uint64(0)
			push := func(k int) {
				for range k {
					seq++
					l.push(held{m: Message{Seq: seq}})
				}
			}
			push(tc.queued)
			if tc.later > 0 {
				go func() {
					for {
						l.mu.Lock()
						empty := len(l.queue) == 0
						l.mu.Unlock()
						if empty {
							push(tc.later)
							return
						}
						time.Sleep(time.Millisecond)
					}
				}()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			in := Integration{Batch: Batching{MaxMessages: 5}}
			got := l.next(ctx, in, tc.pace)
			if ctx.Err() != nil {
				t.Fatalf("the lane waited until the test's deadline (for a pace of %s)", tc.pace)
			}
			seqs := make([]uint64, len(got))
			for i, h := range got {
				seqs[i] = h.m.Seq
			}
			if len(got) != tc.want || !slices.IsSorted(seqs) {
				t.Errorf("batch %v, want %d messages in order", seqs, tc.want)
			}
			if tc.waits && l.started.Sub(last) < tc.pace {
				t.Errorf("a busy lane started its batch %s after the last, pace %s", l.started.Sub(last), tc.pace)
			}
		})
	}
}

// TestLanePace: the lanes of an integration together start at most one
// batch per paceStep, a lane's pace is bounded, and never past maxWait.
func TestLanePace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lanes   int
		maxWait time.Duration
		want    time.Duration
	}{
		{name: "four lanes", lanes: 4, maxWait: time.Second, want: 4 * paceStep},
		{name: "many lanes: bounded", lanes: 32, maxWait: time.Second, want: maxPace},
		{name: "short maxWait", lanes: 8, maxWait: 10 * time.Millisecond, want: 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Integration{Batch: Batching{MaxMessages: 100, MaxWait: Duration(tc.maxWait)}}
			if got := lanePace(in, tc.lanes); got != tc.want {
				t.Errorf("pace %s, want %s", got, tc.want)
			}
		})
	}
}
