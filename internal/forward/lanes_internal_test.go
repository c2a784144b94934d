package forward

import (
	"slices"
	"testing"
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
