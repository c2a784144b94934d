package mesh_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/mesh"
)

const testNetwork = 0x00ABC123

// t0 is the test clock's start.
var t0 = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

// fixture is a Receiver of testNetwork with epoch 2 current and epoch 1 in
// its grace period until t0+1h, nodes 1 to 3 authorized, and a clock the
// test moves.
type fixture struct {
	r      *mesh.Receiver
	clock  atomic.Int64 // Unix nanoseconds
	keys   map[uint32]*mesh.Key
	keySet mesh.KeySet
}

func keyBytes(epoch byte) []byte { return bytes.Repeat([]byte{0x10 + epoch}, 16) }

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{keys: map[uint32]*mesh.Key{}}
	f.clock.Store(t0.UnixNano())
	f.r = mesh.NewReceiver(func() time.Time { return time.Unix(0, f.clock.Load()) })
	graceEnd := t0.Add(time.Hour)
	f.keySet = mesh.KeySet{NetworkID: testNetwork, Version: 2, Keys: []mesh.EpochKey{
		{Epoch: 2, Key: keyBytes(2)},
		{Epoch: 1, Key: keyBytes(1), NotAfter: &graceEnd},
	}}
	for _, e := range []uint32{1, 2, 3} {
		f.keys[e] = mustKey(t, keyBytes(byte(e)))
	}
	if err := f.r.SetKeys(f.keySet); err != nil {
		t.Fatal(err)
	}
	if err := f.r.SetNodes(testNetwork, 1, []uint32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	return f
}

// frame seals a battery message of node at (boot, counter) under the
// current epoch.
func (f *fixture) frame(t testing.TB, node, boot, counter uint32) []byte {
	t.Helper()
	return f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: node, Boot: boot, Counter: counter})
}

// frameOf seals a message under h with h.Epoch's test key.
func (f *fixture) frameOf(t testing.TB, h mesh.Header) []byte {
	t.Helper()
	return mustSeal(t, f.keys[h.Epoch], h, fmt.Sprintf(`{"tsmId":1110,"tsmEv":10,"batl":%d,"tsmTs":%d,"tsmTuid":"TSEN01MSH%08d"}`, h.Counter%101, 1520416221+int64(h.Counter), h.Node))
}

// receive gives a copy of frame to the receiver (Receive overwrites it).
func (f *fixture) receive(frame []byte) ([]byte, uint32, mesh.Reason) {
	return f.r.Receive(bytes.Clone(frame))
}

// expect receives frame and fails unless the outcome is want.
func (f *fixture) expect(t *testing.T, frame []byte, want mesh.Reason) {
	t.Helper()
	if _, _, got := f.receive(frame); got != want {
		h, _, err := mesh.Parse(frame)
		t.Fatalf("frame %+v (%v): %v, want %v", h, err, got, want)
	}
}

func TestMeshReceiverAcceptsASealedFrame(t *testing.T) {
	f := newFixture(t)
	frame := f.frame(t, 2, 7, 0)
	_, want, _ := mesh.Open(f.keys[2], frame)
	msg, node, reason := f.receive(frame)
	if reason != mesh.Accepted || node != 2 || !bytes.Equal(msg, want) {
		t.Fatalf("Receive = %q, %d, %v", msg, node, reason)
	}
}

// TestMeshReceiverDropReasons runs each case on a fresh receiver: the
// frames of before are accepted, then frame gets want.
func TestMeshReceiverDropReasons(t *testing.T) {
	type build func(t *testing.T, f *fixture) []byte
	seq := func(node, boot uint32, counters ...uint32) func(t *testing.T, f *fixture) [][]byte {
		return func(t *testing.T, f *fixture) [][]byte {
			var out [][]byte
			for _, c := range counters {
				out = append(out, f.frame(t, node, boot, c))
			}
			return out
		}
	}
	flip := func(i int, fr []byte) []byte { fr = bytes.Clone(fr); fr[i] ^= 0x01; return fr }
	for _, tc := range []struct {
		name    string
		before  func(t *testing.T, f *fixture) [][]byte
		advance time.Duration
		frame   build
		want    mesh.Reason
	}{
		{
			name:   "the same frame again",
			before: seq(1, 5, 0),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 0) },
			want:   mesh.Replay,
		},
		{
			name:   "a frame of an older boot",
			before: seq(1, 5, 0),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 4, 100) },
			want:   mesh.Replay,
		},
		{
			name:   "a frame below the window",
			before: seq(1, 5, 0, 100),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 100-mesh.WindowSize) },
			want:   mesh.Replay,
		},
		{
			name:   "the lowest counter of the window, once",
			before: seq(1, 5, 0, 100),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 100-mesh.WindowSize+1) },
			want:   mesh.Accepted,
		},
		{
			name:   "an out-of-order frame seen before",
			before: seq(1, 5, 10, 8, 9),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 8) },
			want:   mesh.Replay,
		},
		{
			name:   "an out-of-order frame not seen before",
			before: seq(1, 5, 10, 8),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 9) },
			want:   mesh.Accepted,
		},
		{
			name:   "a frame after a jump past the window",
			before: seq(1, 5, 0, 1000),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 999) },
			want:   mesh.Accepted,
		},
		{
			name:   "a node reboot (new boot, counter from 0)",
			before: seq(1, 5, 0, 1, 2, 3),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 6, 0) },
			want:   mesh.Accepted,
		},
		{
			name:   "a frame of the boot before a reboot",
			before: seq(1, 6, 0),
			frame:  func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 4) },
			want:   mesh.Replay,
		},
		{
			name:  "a forged tag",
			frame: func(t *testing.T, f *fixture) []byte { fr := f.frame(t, 1, 5, 0); return flip(len(fr)-1, fr) },
			want:  mesh.Forged,
		},
		{
			name:  "a flipped ciphertext byte",
			frame: func(t *testing.T, f *fixture) []byte { return flip(mesh.HeaderSize+3, f.frame(t, 1, 5, 0)) },
			want:  mesh.Forged,
		},
		{
			name:  "a flipped header byte (associated data): the counter",
			frame: func(t *testing.T, f *fixture) []byte { return flip(23, f.frame(t, 1, 5, 0)) },
			want:  mesh.Forged,
		},
		{
			name:  "a flipped header byte (associated data): the boot",
			frame: func(t *testing.T, f *fixture) []byte { return flip(19, f.frame(t, 1, 5, 0)) },
			want:  mesh.Forged,
		},
		{
			name:  "a header byte flipped to another authorized node",
			frame: func(t *testing.T, f *fixture) []byte { return flip(15, f.frame(t, 2, 5, 0)) },
			want:  mesh.Forged,
		},
		{
			name: "a forged frame does not move the window",
			before: func(t *testing.T, f *fixture) [][]byte {
				forged := flip(mesh.HeaderSize, f.frame(t, 1, 5, 10))
				if _, _, r := f.receive(forged); r != mesh.Forged {
					t.Fatalf("forged frame: %v", r)
				}
				return nil
			},
			frame: func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 5, 10) },
			want:  mesh.Accepted,
		},
		{
			name: "sealed with another key under the current epoch",
			frame: func(t *testing.T, f *fixture) []byte {
				return mustSeal(t, f.keys[3], mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 1}, battery)
			},
			want: mesh.Forged,
		},
		{
			name:  "an unknown node",
			frame: func(t *testing.T, f *fixture) []byte { return f.frame(t, 4, 1, 0) },
			want:  mesh.UnknownNode,
		},
		{
			name: "an unknown network",
			frame: func(t *testing.T, f *fixture) []byte {
				return f.frameOf(t, mesh.Header{NetworkID: testNetwork + 1, Epoch: 2, Node: 1})
			},
			want: mesh.UnknownNetwork,
		},
		{
			name: "the previous epoch during its grace period",
			frame: func(t *testing.T, f *fixture) []byte {
				return f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 1, Node: 1})
			},
			want: mesh.Accepted,
		},
		{
			name:    "the previous epoch at the end of its grace period",
			advance: time.Hour,
			frame: func(t *testing.T, f *fixture) []byte {
				return f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 1, Node: 1})
			},
			want: mesh.Accepted,
		},
		{
			name:    "the previous epoch after its grace period",
			advance: time.Hour + time.Nanosecond,
			frame: func(t *testing.T, f *fixture) []byte {
				return f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 1, Node: 1})
			},
			want: mesh.StaleEpoch,
		},
		{
			name:    "the current epoch long after",
			advance: 1000 * time.Hour,
			frame:   func(t *testing.T, f *fixture) []byte { return f.frame(t, 1, 1, 0) },
			want:    mesh.Accepted,
		},
		{
			name: "an epoch the receiver holds no key for",
			frame: func(t *testing.T, f *fixture) []byte {
				return f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 3, Node: 1})
			},
			want: mesh.StaleEpoch,
		},
		{
			name:  "truncated",
			frame: func(t *testing.T, f *fixture) []byte { fr := f.frame(t, 1, 5, 0); return fr[:len(fr)-1] },
			want:  mesh.Truncated,
		},
		{
			name:  "malformed",
			frame: func(t *testing.T, f *fixture) []byte { return flip(2, f.frame(t, 1, 5, 0)) },
			want:  mesh.Malformed,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.before != nil {
				for _, fr := range tc.before(t, f) {
					f.expect(t, fr, mesh.Accepted)
				}
			}
			fr := tc.frame(t, f)
			f.clock.Add(int64(tc.advance))
			f.expect(t, fr, tc.want)
			st := f.r.Stats()
			if tc.want != mesh.Accepted && st.Dropped[tc.want.String()] != 1 {
				t.Fatalf("stats %+v: the drop is not counted as %s", st, tc.want)
			}
		})
	}
}

func TestMeshReceiverDropsEveryTruncationOfAFrame(t *testing.T) {
	f := newFixture(t)
	fr := f.frame(t, 1, 1, 0)
	for n := 0; n < len(fr); n++ {
		if _, _, r := f.receive(fr[:n]); r != mesh.Truncated {
			t.Fatalf("frame cut to %d of %d bytes: %v, want truncated", n, len(fr), r)
		}
	}
	if st := f.r.Stats(); st.Dropped["truncated"] != uint64(len(fr)) || st.Accepted != 0 {
		t.Fatalf("stats %+v", st)
	}
	f.expect(t, fr, mesh.Accepted)
}

func TestMeshReceiverNeverAcceptsAFlippedHeaderByte(t *testing.T) {
	f := newFixture(t)
	fr := f.frame(t, 1, 1, 0)
	for i := range mesh.HeaderSize {
		for bit := range 8 {
			g := bytes.Clone(fr)
			g[i] ^= 1 << bit
			if _, _, r := f.receive(g); r == mesh.Accepted {
				t.Fatalf("byte %d bit %d flipped: accepted", i, bit)
			}
		}
	}
	f.expect(t, fr, mesh.Accepted)
}

// TestMeshReceiverCounterWrapNeedsANewBoot shows why a node must start a
// new boot when its counter is spent: a counter that wraps to 0 within the
// same boot is refused as a replay (it lies below the window), and the
// frames of the new boot are accepted.
func TestMeshReceiverCounterWrapNeedsANewBoot(t *testing.T) {
	f := newFixture(t)
	s := mesh.NewSender(mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 1, Boot: 7, Counter: 0xFFFFFFF0}, f.keys[2])
	for {
		fr, err := s.Seal([]byte(battery))
		if errors.Is(err, mesh.ErrNewBootNeeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		f.expect(t, fr, mesh.Accepted)
	}
	f.expect(t, f.frame(t, 1, 7, 0), mesh.Replay) // wrapped within the boot
	next := mesh.NewSender(mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 1, Boot: 8}, f.keys[2])
	fr, err := next.Seal([]byte(battery))
	if err != nil {
		t.Fatal(err)
	}
	f.expect(t, fr, mesh.Accepted)
}

func TestMeshReceiverDropsEverythingWithoutKeysOrNodes(t *testing.T) {
	f := newFixture(t)
	fr := f.frame(t, 1, 1, 0)
	r := mesh.NewReceiver(nil)
	if _, _, got := r.Receive(bytes.Clone(fr)); got != mesh.UnknownNetwork {
		t.Fatalf("no keys: %v", got)
	}
	if err := r.SetKeys(f.keySet); err != nil {
		t.Fatal(err)
	}
	if _, _, got := r.Receive(bytes.Clone(fr)); got != mesh.UnknownNode {
		t.Fatalf("no nodes: %v", got)
	}
	if err := r.SetNodes(testNetwork+1, 1, []uint32{1}); err != nil {
		t.Fatal(err)
	}
	if _, _, got := r.Receive(bytes.Clone(fr)); got != mesh.UnknownNode {
		t.Fatalf("nodes of another network: %v", got)
	}
}

func TestMeshReceiverRefusesOlderKeySetsAndNodeLists(t *testing.T) {
	f := newFixture(t)
	older := f.keySet
	older.Version = 1
	older.Keys = []mesh.EpochKey{{Epoch: 1, Key: keyBytes(1)}}
	if err := f.r.SetKeys(older); !errors.Is(err, mesh.ErrOlderVersion) {
		t.Fatalf("older key set: %v", err)
	}
	if err := f.r.SetNodes(testNetwork, 0, []uint32{9}); !errors.Is(err, mesh.ErrOlderVersion) {
		t.Fatalf("older node list: %v", err)
	}
	if err := f.r.SetKeys(mesh.KeySet{NetworkID: testNetwork, Version: 9}); err == nil {
		t.Fatal("SetKeys accepted a set without keys")
	}
	if k, n := f.r.Versions(); k != 2 || n != 1 {
		t.Fatalf("Versions = %d, %d", k, n)
	}
	// Epoch 1 is still in its grace period: the refused set changed nothing.
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 1, Node: 1}), mesh.Accepted)
}

func TestMeshReceiverRotationEndsTheOldEpoch(t *testing.T) {
	f := newFixture(t)
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 1, Node: 1, Counter: 0}), mesh.Accepted)
	// Rotate: epoch 3 current, 2 in grace for ten minutes, 1 gone.
	graceEnd := t0.Add(10 * time.Minute)
	if err := f.r.SetKeys(mesh.KeySet{NetworkID: testNetwork, Version: 3, Keys: []mesh.EpochKey{
		{Epoch: 3, Key: keyBytes(3)}, {Epoch: 2, Key: keyBytes(2), NotAfter: &graceEnd},
	}}); err != nil {
		t.Fatal(err)
	}
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 1, Node: 1, Counter: 1}), mesh.StaleEpoch)
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 1, Counter: 2}), mesh.Accepted)
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 3, Node: 1, Counter: 3}), mesh.Accepted)
	f.clock.Add(int64(11 * time.Minute))
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 1, Counter: 4}), mesh.StaleEpoch)
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 3, Node: 1, Counter: 5}), mesh.Accepted)
	// The window is the node's, whatever the epoch: a counter accepted
	// under epoch 2 stays taken under epoch 3.
	f.expect(t, f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 3, Node: 1, Counter: 2}), mesh.Replay)
}

func TestMeshReceiverKeepsTheWindowOfARemovedNode(t *testing.T) {
	f := newFixture(t)
	fr := f.frame(t, 3, 1, 0)
	f.expect(t, fr, mesh.Accepted)
	if err := f.r.SetNodes(testNetwork, 2, []uint32{1, 2}); err != nil {
		t.Fatal(err)
	}
	f.expect(t, f.frame(t, 3, 1, 1), mesh.UnknownNode)
	if err := f.r.SetNodes(testNetwork, 3, []uint32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	f.expect(t, fr, mesh.Replay)
}

// TestMeshReceiverStateSurvivesARestart exports the windows, "restarts"
// (a new Receiver), imports them, and checks that what was accepted
// before is refused after, and that new frames still pass.
func TestMeshReceiverStateSurvivesARestart(t *testing.T) {
	f := newFixture(t)
	var accepted [][]byte
	for _, h := range []struct{ node, boot, counter uint32 }{
		{1, 3, 0}, {1, 3, 5}, {1, 3, 2}, {2, 9, 100}, {3, 1, 0}, {3, 2, 0},
	} {
		fr := f.frame(t, h.node, h.boot, h.counter)
		f.expect(t, fr, mesh.Accepted)
		accepted = append(accepted, fr)
	}
	states, mark := f.r.Snapshot()
	if len(states) != 3 || mark == 0 {
		t.Fatalf("snapshot %+v, mark %d", states, mark)
	}
	// Persist in binary, as the agent may.
	var disk []byte
	for _, s := range states {
		disk, _ = s.AppendBinary(disk)
	}

	g := newFixture(t) // the agent after a restart
	var restored []mesh.NodeState
	for b := disk; len(b) > 0; b = b[mesh.NodeStateSize:] {
		var s mesh.NodeState
		if err := s.UnmarshalBinary(b[:mesh.NodeStateSize]); err != nil {
			t.Fatal(err)
		}
		restored = append(restored, s)
	}
	if !slices.Equal(restored, states) {
		t.Fatalf("binary round trip: %+v, want %+v", restored, states)
	}
	if err := g.r.Restore(restored); err != nil {
		t.Fatal(err)
	}
	for i, fr := range accepted {
		if _, _, r := g.receive(fr); r != mesh.Replay {
			t.Fatalf("frame %d accepted before the restart: %v after it, want replay", i, r)
		}
	}
	g.expect(t, f.frame(t, 1, 3, 1), mesh.Accepted) // inside the window, never seen
	g.expect(t, f.frame(t, 1, 3, 6), mesh.Accepted)
	g.expect(t, f.frame(t, 2, 10, 0), mesh.Accepted)

	// Without the state, the same frames would pass: the test can fail.
	h := newFixture(t)
	h.expect(t, accepted[0], mesh.Accepted)
}

func TestMeshReceiverChangesSinceAMark(t *testing.T) {
	f := newFixture(t)
	f.expect(t, f.frame(t, 1, 1, 0), mesh.Accepted)
	f.expect(t, f.frame(t, 2, 1, 0), mesh.Accepted)
	all, mark := f.r.Changes(nil, 0)
	if len(all) != 2 {
		t.Fatalf("changes since 0: %+v", all)
	}
	if got, again := f.r.Changes(nil, mark); len(got) != 0 || again != mark {
		t.Fatalf("nothing changed, got %+v, mark %d → %d", got, mark, again)
	}
	f.expect(t, f.frame(t, 2, 1, 1), mesh.Accepted)
	f.expect(t, f.frame(t, 2, 1, 1), mesh.Replay) // a drop changes nothing
	got, next := f.r.Changes(nil, mark)
	want := []mesh.NodeState{{Network: testNetwork, Node: 2, Boot: 1, Top: 1, Seen: 0b11}}
	if !slices.Equal(got, want) || next <= mark {
		t.Fatalf("changes since %d: %+v (mark %d), want %+v", mark, got, next, want)
	}
}

func TestMeshReceiverRestoreMergesAndNeverMovesAWindowBack(t *testing.T) {
	f := newFixture(t)
	f.expect(t, f.frame(t, 1, 4, 10), mesh.Accepted)
	for _, tc := range []struct {
		name  string
		state mesh.NodeState
		frame [2]uint32 // boot, counter
		want  mesh.Reason
	}{
		{"an older boot changes nothing", mesh.NodeState{Network: testNetwork, Node: 1, Boot: 3, Top: 50, Seen: 1}, [2]uint32{4, 11}, mesh.Accepted},
		{"a newer top of the same boot keeps the seen bits", mesh.NodeState{Network: testNetwork, Node: 1, Boot: 4, Top: 20, Seen: 1}, [2]uint32{4, 10}, mesh.Replay},
		{"a newer boot wins", mesh.NodeState{Network: testNetwork, Node: 1, Boot: 5, Top: 0, Seen: 1}, [2]uint32{4, 30}, mesh.Replay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.r.Restore([]mesh.NodeState{tc.state}); err != nil {
				t.Fatal(err)
			}
			f.expect(t, f.frame(t, 1, tc.frame[0], tc.frame[1]), tc.want)
		})
	}
	if err := f.r.Restore([]mesh.NodeState{{Network: testNetwork, Node: 2, Boot: 1, Top: 1, Seen: 0b10}}); err == nil {
		t.Fatal("Restore accepted a state whose top was never seen")
	}
	var s mesh.NodeState
	if err := s.UnmarshalBinary(make([]byte, mesh.NodeStateSize-1)); err == nil {
		t.Fatal("UnmarshalBinary accepted a short state")
	}
}

// TestMeshReceiverConcurrentUse receives the same frames on several
// goroutines, as several sockets would, while keys, nodes and the state
// change: every frame is accepted exactly once. Each goroutine takes the
// frames in its own order, shuffled within blocks of 32 counters of one
// node, so that no frame can fall below a window before some goroutine
// reached it. Run it with -race.
func TestMeshReceiverConcurrentUse(t *testing.T) {
	f := newFixture(t)
	const nodes, perNode, workers, block = 3, 256, 4, 32
	var frames [][]byte
	for b := uint32(0); b < perNode; b += block {
		for n := uint32(1); n <= nodes; n++ {
			for c := b; c < b+block; c++ {
				frames = append(frames, f.frame(t, n, 1, c))
			}
		}
	}
	orders := make([][][]byte, workers)
	for w := range orders {
		rng := rand.New(rand.NewPCG(uint64(w), 1))
		orders[w] = slices.Clone(frames)
		for i := 0; i < len(frames); i += block {
			part := orders[w][i : i+block]
			rng.Shuffle(len(part), func(a, b int) { part[a], part[b] = part[b], part[a] })
		}
	}
	var accepted atomic.Int64
	var mu sync.Mutex
	byFrame := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, fr := range orders[w] {
				msg, _, r := f.receive(fr)
				if r == mesh.Accepted {
					accepted.Add(1)
					mu.Lock()
					byFrame[string(msg)]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var mark uint64
		for v := range uint64(50) {
			_, mark = f.r.Changes(nil, mark)
			_ = f.r.SetNodes(testNetwork, 10+v, []uint32{1, 2, 3})
			ks := f.keySet
			ks.Version = 10 + v
			_ = f.r.SetKeys(ks)
			_ = f.r.Stats()
		}
	}()
	wg.Wait()
	st := f.r.Stats()
	if got := accepted.Load(); got != nodes*perNode || st.Accepted != uint64(got) {
		t.Fatalf("accepted %d (stats %d), want %d", got, st.Accepted, nodes*perNode)
	}
	if st.Dropped["replay"] != uint64((workers-1)*nodes*perNode) {
		t.Fatalf("stats %+v", st)
	}
	for msg, n := range byFrame {
		if n != 1 {
			t.Fatalf("%s accepted %d times", msg, n)
		}
	}
}

func TestMeshReasonNames(t *testing.T) {
	var names []string
	for _, r := range mesh.DropReasons() {
		names = append(names, r.String())
	}
	want := []string{"replay", "forged", "truncated", "malformed", "unknown_node", "stale_epoch", "unknown_network"}
	if !slices.Equal(names, want) || mesh.Accepted.String() != "accepted" || mesh.Reason(200).String() != "reason(200)" {
		t.Fatalf("reasons %v", names)
	}
	st := mesh.NewReceiver(nil).Stats()
	if len(st.Dropped) != len(want) {
		t.Fatalf("Stats.Dropped %v: every reason must be there, zeros included", st.Dropped)
	}
}
