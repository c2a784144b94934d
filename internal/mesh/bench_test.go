package mesh_test

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/mesh"
)

// Benchmarks (docs/mesh.md, "Cost"): what one core spends to check a frame
// beside the bare AES-128-GCM open of the same size, the physical floor.
//
//	go test -run '^$' -bench 'Receive|GCMOpen|Seal' -benchmem -cpu 1 ./internal/mesh

// benchSizes are message sizes of real Thingsee messages (80–200 bytes).
var benchSizes = []int{80, 150, 200}

// benchMessage returns a message of n bytes.
func benchMessage(n int) []byte {
	m := `{"tsmId":1110,"tsmEv":10,"tsmTuid":"TSEN01MSH00000001","x":"`
	return []byte(m + strings.Repeat("0", n-len(m)-2) + `"}`)
}

// ring is the number of frames sealed ahead; Receive consumes each (a
// frame is accepted once, and it is decrypted in place).
const ring = 4096

// BenchmarkReceive is Receive of frames from 64 nodes: parse, network,
// node and epoch checks, the replay pre-check, AES-128-GCM open in place,
// the window update and the counters.
func BenchmarkReceive(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			f := newFixture(b)
			nodes := make([]uint32, 64)
			for i := range nodes {
				nodes[i] = uint32(i + 1)
			}
			if err := f.r.SetNodes(testNetwork, 2, nodes); err != nil {
				b.Fatal(err)
			}
			msg := benchMessage(size)
			frames := make([][]byte, ring)
			boot := uint32(0)
			refill := func() {
				boot++
				for i := range frames {
					h := mesh.Header{NetworkID: testNetwork, Epoch: 2, Node: uint32(i%64 + 1), Boot: boot, Counter: uint32(i / 64)}
					var err error
					if frames[i], err = mesh.AppendSeal(frames[i][:0], f.keys[2], h, msg); err != nil {
						b.Fatal(err)
					}
				}
			}
			refill()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%ring == 0 && i > 0 {
					b.StopTimer()
					refill()
					b.StartTimer()
				}
				if _, _, r := f.r.Receive(frames[i%ring]); r != mesh.Accepted {
					b.Fatalf("frame %d: %v", i, r)
				}
			}
		})
	}
}

// BenchmarkGCMOpen is the bare crypto/cipher AES-128-GCM open of a sealed
// message of the same size, with the same associated data: the floor under
// BenchmarkReceive.
func BenchmarkGCMOpen(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			block, err := aes.NewCipher(testKeyBytes)
			if err != nil {
				b.Fatal(err)
			}
			gcm, err := cipher.NewGCM(block)
			if err != nil {
				b.Fatal(err)
			}
			nonce, aad := make([]byte, 12), make([]byte, mesh.HeaderSize)
			sealed := gcm.Seal(nil, nonce, benchMessage(size), aad)
			out := make([]byte, 0, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := gcm.Open(out, nonce, sealed, aad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSeal is a node's (or mesh-sim's) cost per frame.
func BenchmarkSeal(b *testing.B) {
	key := mustKey(b, testKeyBytes)
	msg := benchMessage(150)
	buf := make([]byte, 0, mesh.MaxFrameSize)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = mesh.AppendSeal(buf[:0], key, mesh.Header{NetworkID: 1, Epoch: 1, Node: 1, Counter: uint32(i)}, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReceiveDrop is the cost of a frame dropped before the cipher
// (an unknown node): what a flood of junk costs.
func BenchmarkReceiveDrop(b *testing.B) {
	f := newFixture(b)
	frame := f.frame(b, 99, 1, 0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, r := f.r.Receive(frame); r != mesh.UnknownNode {
			b.Fatal(r)
		}
	}
}
