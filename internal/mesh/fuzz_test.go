package mesh_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/iotransit/iotransit/internal/mesh"
)

// Fuzz targets (docs/mesh.md). Minimizing a new input of a thousand bytes
// takes the default minute; a shorter bound keeps the fuzzer fuzzing:
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 20s -fuzzminimizetime 2s ./internal/mesh
//	go test -run '^$' -fuzz '^FuzzReceive$' -fuzztime 20s -fuzzminimizetime 2s ./internal/mesh
//	go test -run '^$' -fuzz '^FuzzReplayWindow$' -fuzztime 20s -fuzzminimizetime 2s ./internal/mesh

// seedFrames are frames the fuzzers start from: valid ones of every epoch
// the fixture knows and of one it does not, and broken ones.
func seedFrames(t testing.TB, f *fixture) [][]byte {
	good := f.frame(t, 1, 5, 9)
	seeds := [][]byte{
		good,
		f.frame(t, 2, 0, 0),
		f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 1, Node: 3, Boot: 1, Counter: 1}),
		f.frameOf(t, mesh.Header{NetworkID: testNetwork, Epoch: 3, Node: 3}),
		f.frame(t, 4, 1, 1),
		good[:mesh.HeaderSize],
		good[:len(good)-1],
		append(bytes.Clone(good), 0),
		nil,
		[]byte("IM"),
		[]byte(battery),
	}
	big, err := mesh.Seal(f.keys[2], mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: 2, Boot: 1}, bytes.Repeat([]byte("a"), mesh.MaxPayload))
	if err != nil {
		t.Fatal(err)
	}
	return append(seeds, big)
}

// FuzzParse: Parse never panics; what it accepts has exactly the size its
// header says and re-encodes to the same header, every prefix of it is
// truncated, and every refusal is ErrTruncated or ErrMalformed.
func FuzzParse(f *testing.F) {
	for _, s := range seedFrames(f, newFixture(f)) {
		f.Add(s)
	}
	key := mustKey(f, testKeyBytes)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, sealed, err := mesh.Parse(data)
		if err != nil {
			if !errors.Is(err, mesh.ErrTruncated) && !errors.Is(err, mesh.ErrMalformed) {
				t.Fatalf("Parse error %v is neither truncated nor malformed", err)
			}
			return
		}
		n := int(binary.BigEndian.Uint16(data[24:]))
		if len(data) != mesh.HeaderSize+n+mesh.TagSize || len(sealed) != n+mesh.TagSize || n == 0 || len(data) > mesh.MaxFrameSize {
			t.Fatalf("accepted a frame of %d bytes whose payload length is %d", len(data), n)
		}
		again := mustSeal(t, key, h, string(make([]byte, n)))
		if !bytes.Equal(again[:mesh.HeaderSize], data[:mesh.HeaderSize]) {
			t.Fatalf("header %x re-encodes as %x", data[:mesh.HeaderSize], again[:mesh.HeaderSize])
		}
		for _, cut := range []int{0, 1, mesh.HeaderSize - 1, mesh.HeaderSize, len(data) - 1} {
			if _, _, err := mesh.Parse(data[:cut]); !errors.Is(err, mesh.ErrTruncated) {
				t.Fatalf("prefix of %d bytes: %v, want truncated", cut, err)
			}
		}
	})
}

// FuzzReceive: Receive never panics, and accepts only what was sealed with
// a key it holds under the frame's own header (re-sealing the message
// gives back the frame's bytes), and never the same frame twice; its
// reason agrees with Parse.
func FuzzReceive(f *testing.F) {
	fx := newFixture(f)
	for _, s := range seedFrames(f, fx) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fx := newFixture(t)
		msg, node, reason := fx.receive(data)
		_, _, perr := mesh.Parse(data)
		switch {
		case errors.Is(perr, mesh.ErrTruncated) && reason != mesh.Truncated,
			errors.Is(perr, mesh.ErrMalformed) && reason != mesh.Malformed,
			perr == nil && (reason == mesh.Truncated || reason == mesh.Malformed):
			t.Fatalf("Receive says %v, Parse %v", reason, perr)
		}
		if reason != mesh.Accepted {
			if msg != nil {
				t.Fatalf("dropped (%v) with a message", reason)
			}
			return
		}
		h, _, err := mesh.Parse(data)
		if err != nil || h.Node != node {
			t.Fatalf("accepted %x: node %d, Parse %+v %v", data, node, h, err)
		}
		key, ok := fx.keys[h.Epoch]
		if !ok || h.Epoch == 3 {
			t.Fatalf("accepted a frame of epoch %d, which the receiver holds no key for", h.Epoch)
		}
		if again := mustSeal(t, key, h, string(msg)); !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, which is not the sealing of its message under its header", data)
		}
		if _, _, r := fx.receive(data); r != mesh.Replay {
			t.Fatalf("the same frame twice: %v", r)
		}
	})
}

// FuzzReplayWindow drives a receiver with properly sealed frames whose
// (node, boot, counter) come from the fuzzer, some forged, with a restart
// (export, new receiver, import) now and then, and checks every outcome
// against a naive model of the rule: a frame is accepted if and only if it
// authenticates, was never accepted before, and is of a newer boot than
// the node's newest, or of that boot and above its highest counter less
// WindowSize.
func FuzzReplayWindow(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0})
	f.Add([]byte{0, 1, 0, 100, 0, 0, 1, 0, 36, 0, 0, 1, 0, 37, 0, 0, 0, 0, 0, 2, 0, 1, 0, 37, 0})
	f.Add([]byte{1, 2, 1, 0, 1, 1, 2, 1, 0, 0, 1, 3, 0, 0, 2, 1, 2, 1, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		fx := newFixture(t)
		type pair struct{ boot, counter uint32 }
		type model struct {
			seen    map[pair]bool
			started bool
			boot    uint32
			top     uint32
		}
		models := map[uint32]*model{1: {seen: map[pair]bool{}}, 2: {seen: map[pair]bool{}}}
		for ; len(ops) >= 5; ops = ops[5:] {
			node := uint32(ops[0]&1) + 1
			p := pair{boot: uint32(ops[1] % 4), counter: uint32(binary.BigEndian.Uint16(ops[2:4])) % 400}
			forge, restart := ops[4]&1 != 0, ops[4]&2 != 0
			m := models[node]
			windowAllows := !m.started || p.boot > m.boot || (p.boot == m.boot && (p.counter > m.top || m.top-p.counter < mesh.WindowSize))
			want := mesh.Replay
			switch {
			case m.seen[p] || !windowAllows:
			case forge:
				want = mesh.Forged
			default:
				want = mesh.Accepted
			}
			fr := fx.frame(t, node, p.boot, p.counter)
			if forge {
				fr[len(fr)-1] ^= 0x80
			}
			if _, _, got := fx.receive(fr); got != want {
				t.Fatalf("node %d %+v forged=%v: %v, want %v (model %+v)", node, p, forge, got, want, *m)
			}
			if want == mesh.Accepted {
				m.seen[p] = true
				if !m.started || p.boot > m.boot || p.counter > m.top {
					m.top = p.counter
				}
				m.started, m.boot = true, max(m.boot, p.boot)
			}
			if restart {
				states, _ := fx.r.Snapshot()
				fresh := mesh.NewReceiver(nil)
				if err := fresh.SetKeys(fx.keySet); err != nil {
					t.Fatal(err)
				}
				if err := fresh.SetNodes(testNetwork, 1, []uint32{1, 2, 3}); err != nil {
					t.Fatal(err)
				}
				if err := fresh.Restore(states); err != nil {
					t.Fatal(err)
				}
				fx.r = fresh
			}
		}
	})
}
