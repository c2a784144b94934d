package mesh_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/mesh"
)

// testKeyBytes are the bytes of the test vector's key (docs/mesh.md).
var testKeyBytes = mustHex("000102030405060708090a0b0c0d0e0f")

// battery is a real Thingsee battery message (shared/testdata/thingsee).
const battery = `{"tsmId":1110,"tsmEv":10,"batl":87,"tsmTs":1520416221,"tsmTuid":"TSPR04E2O90201558"}`

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

func mustKey(t testing.TB, raw []byte) *mesh.Key {
	t.Helper()
	k, err := mesh.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSeal(t testing.TB, k *mesh.Key, h mesh.Header, msg string) []byte {
	t.Helper()
	f, err := mesh.Seal(k, h, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMeshFrameMatchesTheDocumentedLayout builds the frame of docs/mesh.md's
// test vector by hand, with crypto/cipher and the nonce made of node id,
// boot and counter, and checks that Seal makes the same bytes, and that
// they are the vector's.
func TestMeshFrameMatchesTheDocumentedLayout(t *testing.T) {
	h := mesh.Header{NetworkID: 0x00ABC123, Epoch: 2, Node: 7, Boot: 3, Counter: 41}
	msg := []byte(battery)

	hdr := []byte{'I', 'M', 1, 0}
	for _, v := range []uint32{h.NetworkID, h.Epoch, h.Node, h.Boot, h.Counter} {
		hdr = binary.BigEndian.AppendUint32(hdr, v)
	}
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(msg)))
	nonce := make([]byte, 0, 12)
	for _, v := range []uint32{h.Node, h.Boot, h.Counter} {
		nonce = binary.BigEndian.AppendUint32(nonce, v)
	}
	block, err := aes.NewCipher(testKeyBytes)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	want := gcm.Seal(append([]byte(nil), hdr...), nonce, msg, hdr)

	got := mustSeal(t, mustKey(t, testKeyBytes), h, battery)
	if !bytes.Equal(got, want) {
		t.Fatalf("Seal:\n got %x\nwant %x", got, want)
	}
	if len(got) != mesh.Overhead+len(msg) || mesh.HeaderSize != 26 || mesh.Overhead != 42 {
		t.Fatalf("frame of %d bytes for a %d-byte message", len(got), len(msg))
	}
	// The vector printed in docs/mesh.md.
	vector := mustHex(`
		494d0100 00abc123 00000002 00000007 00000003 00000029 0054
		5126185ddce304fa616009623f558fb26a3edaa1a126deef20baf6e7cd4d3b62
		403c814173a742c6fa1735af574902b7e5d2ccaaffeda4edc7cb309d1618e336
		d7057e0133290119edb9063166b1b46916d6027e
		0a29ca14f37b0cb6f5415d8d5dafa089`)
	if !bytes.Equal(got, vector) {
		t.Errorf("the frame differs from docs/mesh.md's test vector; the frame is\n%x", got)
	}
}

func TestMeshSealOpenRoundTrip(t *testing.T) {
	key := mustKey(t, testKeyBytes)
	for _, tc := range []struct {
		name string
		size int
	}{
		{"one byte", 1},
		{"small message", 80},
		{"typical message", 200},
		{"largest message", mesh.MaxPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := bytes.Repeat([]byte("x"), tc.size)
			h := mesh.Header{NetworkID: 9, Epoch: 1, Node: 2, Boot: 3, Counter: 4}
			f, err := mesh.Seal(key, h, msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(f) > mesh.MaxFrameSize {
				t.Fatalf("frame of %d bytes", len(f))
			}
			orig := bytes.Clone(f)
			gh, got, err := mesh.Open(key, f)
			if err != nil || gh != h || !bytes.Equal(got, msg) {
				t.Fatalf("Open = %+v, %q, %v", gh, got, err)
			}
			if !bytes.Equal(f, orig) {
				t.Fatal("Open changed the frame")
			}
		})
	}
}

func TestMeshSealRefusesEmptyAndOversizeMessages(t *testing.T) {
	key := mustKey(t, testKeyBytes)
	for _, tc := range []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte too long", mesh.MaxPayload + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := mesh.Seal(key, mesh.Header{}, make([]byte, tc.size)); !errors.Is(err, mesh.ErrPayloadSize) {
				t.Fatalf("Seal of %d bytes: %v, want ErrPayloadSize", tc.size, err)
			}
		})
	}
	if !strings.Contains(mesh.ErrPayloadSize.Error(), "1190") || mesh.MaxPayload != 1190 {
		t.Fatalf("ErrPayloadSize %q, MaxPayload %d", mesh.ErrPayloadSize, mesh.MaxPayload)
	}
}

func TestMeshNewKeyRefusesUnsetAndShortKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"short", make([]byte, 15)},
		{"long", bytes.Repeat([]byte{1}, 32)},
		{"all zeros", make([]byte, 16)},
		{"all 0xFF (unset)", bytes.Repeat([]byte{0xFF}, 16)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := mesh.NewKey(tc.raw); err == nil {
				t.Fatal("NewKey accepted it")
			}
		})
	}
	if s := mustKey(t, testKeyBytes).String(); s != "mesh.Key" {
		t.Fatalf("String() = %q", s)
	}
}

func TestMeshParseRefusesWhatIsNoFrame(t *testing.T) {
	key := mustKey(t, testKeyBytes)
	good := mustSeal(t, key, mesh.Header{NetworkID: 1, Epoch: 1, Node: 1}, battery)
	with := func(off int, b ...byte) []byte {
		f := bytes.Clone(good)
		copy(f[off:], b)
		return f
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, mesh.ErrTruncated},
		{"header only", good[:mesh.HeaderSize], mesh.ErrTruncated},
		{"tag cut", good[:len(good)-1], mesh.ErrTruncated},
		{"wrong magic", with(0, 'X'), mesh.ErrMalformed},
		{"wrong magic, one byte", []byte{'X'}, mesh.ErrMalformed},
		{"unknown version", with(2, 2), mesh.ErrMalformed},
		{"flags set", with(3, 1), mesh.ErrMalformed},
		{"zero payload length", with(24, 0, 0), mesh.ErrMalformed},
		{"payload length beyond the maximum", with(24, 0x04, 0xA7), mesh.ErrMalformed},
		{"length says longer than the frame", with(24, 0x01, 0x00), mesh.ErrTruncated},
		{"bytes after the tag", append(bytes.Clone(good), 0), mesh.ErrMalformed},
		{"longer than the maximum frame", make([]byte, mesh.MaxFrameSize+1), mesh.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := mesh.Parse(tc.frame); !errors.Is(err, tc.want) {
				t.Fatalf("Parse: %v, want %v", err, tc.want)
			}
		})
	}
	h, sealed, err := mesh.Parse(good)
	if err != nil || h.NetworkID != 1 || len(sealed) != len(battery)+mesh.TagSize {
		t.Fatalf("Parse(good) = %+v, %d bytes, %v", h, len(sealed), err)
	}
}

func TestMeshOpenRefusesAlteredFrames(t *testing.T) {
	key := mustKey(t, testKeyBytes)
	h := mesh.Header{NetworkID: 1, Epoch: 1, Node: 1, Boot: 1, Counter: 1}
	good := mustSeal(t, key, h, battery)
	for i := 4; i < len(good); i++ {
		if i == 24 || i == 25 {
			continue // the length: Parse refuses it first
		}
		f := bytes.Clone(good)
		f[i] ^= 0x01
		if _, _, err := mesh.Open(key, f); !errors.Is(err, mesh.ErrForged) {
			t.Fatalf("byte %d flipped: Open = %v, want ErrForged", i, err)
		}
	}
	other := mustKey(t, bytes.Repeat([]byte{7}, 16))
	if _, _, err := mesh.Open(other, good); !errors.Is(err, mesh.ErrForged) {
		t.Fatalf("another key: %v", err)
	}
}

func TestMeshSenderCountsAndStopsAtTheLastCounter(t *testing.T) {
	key := mustKey(t, testKeyBytes)
	s := mesh.NewSender(mesh.Header{NetworkID: 1, Epoch: 1, Node: 5, Boot: 9, Counter: 0xFFFFFFFE}, key)
	for _, want := range []uint32{0xFFFFFFFE, 0xFFFFFFFF} {
		f, err := s.Seal([]byte(battery))
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := mesh.Open(key, f)
		if err != nil || h.Counter != want || h.Boot != 9 {
			t.Fatalf("frame %+v, %v; want counter %#x", h, err, want)
		}
	}
	if _, err := s.Seal([]byte(battery)); !errors.Is(err, mesh.ErrNewBootNeeded) {
		t.Fatalf("past the last counter: %v, want ErrNewBootNeeded", err)
	}
	s.Rekey(2, key)
	if _, err := s.Seal([]byte(battery)); !errors.Is(err, mesh.ErrNewBootNeeded) {
		t.Fatalf("a new key does not renew the counters of a boot: %v", err)
	}
}
