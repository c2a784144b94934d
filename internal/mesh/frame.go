package mesh

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The frame (docs/mesh.md): a 26-byte header, the AES-128-GCM ciphertext of
// one Thingsee message, and GCM's 16-byte tag. All integers are big-endian.
//
//	offset size field
//	0      2    magic "IM"
//	2      1    version (1)
//	3      1    flags (0; reserved)
//	4      4    network id
//	8      4    key epoch
//	12     4    node id      ┐
//	16     4    boot counter ├ the 96-bit GCM nonce, as they lie in the header
//	20     4    frame counter┘
//	24     2    payload length (bytes of ciphertext, = bytes of the message)
//	26     n    ciphertext
//	26+n   16   tag
//
// The whole header is GCM's associated data.
const (
	// Version is the frame format's version, byte 2 of every frame.
	Version = 1
	// HeaderSize is the size of the fixed header.
	HeaderSize = 26
	// TagSize is the size of GCM's authentication tag.
	TagSize = 16
	// Overhead is what a frame adds to its message.
	Overhead = HeaderSize + TagSize
	// MaxFrameSize bounds a frame: the IPv6 minimum MTU (1280) less the
	// IPv6 (40) and UDP (8) headers, so that a frame never fragments on any
	// path (the bound DNS over UDP chose for the same reason).
	MaxFrameSize = 1232
	// MaxPayload is the largest message a frame carries.
	MaxPayload = MaxFrameSize - Overhead
	// KeySize is the size of a network key (AES-128).
	KeySize = 16

	nonceOffset = 12
	nonceSize   = 12
)

// magic starts every frame.
var magic = [2]byte{'I', 'M'}

// Header is a frame's header: who sent it, under which key, and where it
// stands in its sender's sequence. The payload length is not a field: it
// is the message's.
type Header struct {
	// NetworkID names the network (the tenant's mesh) the frame belongs to.
	NetworkID uint32
	// Epoch is the key epoch the frame is sealed under.
	Epoch uint32
	// Node is the sending node's id, unique within its network.
	Node uint32
	// Boot is the node's boot counter: persisted by the node and
	// incremented at each boot (and when Counter would wrap).
	Boot uint32
	// Counter is the frame counter within the boot, from 0.
	Counter uint32
}

// Errors of Parse, Open and Seal. Parse and Open wrap ErrTruncated,
// ErrMalformed and ErrForged with the detail.
var (
	// ErrTruncated is a frame shorter than its header or than its header's
	// payload length says: a prefix of a frame.
	ErrTruncated = errors.New("mesh: truncated frame")
	// ErrMalformed is bytes that are no frame of this version: wrong
	// magic, version or flags, no payload, a payload longer than
	// MaxPayload, bytes after the tag, or more than MaxFrameSize bytes.
	ErrMalformed = errors.New("mesh: malformed frame")
	// ErrForged is a frame whose tag does not verify under the key: it was
	// altered (header or ciphertext), or sealed with another key.
	ErrForged = errors.New("mesh: frame does not authenticate")
	// ErrPayloadSize is a message Seal refuses: empty or longer than
	// MaxPayload.
	ErrPayloadSize = errors.New("mesh: message must be 1 to 1190 bytes")
	// ErrNewBootNeeded is what a Sender returns once its frame counter is
	// spent: the node must persist a new boot counter and seal with a new
	// Sender, or it would reuse a nonce.
	ErrNewBootNeeded = errors.New("mesh: frame counter spent; start a new boot")
)

// Key is one network key, ready to seal and open frames. It is safe for
// concurrent use. Its bytes cannot be read back from it.
type Key struct {
	aead cipher.AEAD
}

// NewKey returns the Key of raw, which must be KeySize bytes and neither
// all zeros nor all 0xFF (the "unset" value of mesh radios' key storage).
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("mesh: a network key is %d bytes, got %d", KeySize, len(raw))
	}
	if isFill(raw, 0x00) || isFill(raw, 0xFF) {
		return nil, errors.New("mesh: a network key of all 0x00 or all 0xFF bytes is an unset key")
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Key{aead: aead}, nil
}

// isFill reports whether b is n bytes of v, in constant time.
func isFill(b []byte, v byte) bool {
	acc := 0
	for _, c := range b {
		acc |= int(c ^ v)
	}
	return subtle.ConstantTimeEq(int32(acc), 0) == 1
}

// String names the type and nothing of the key.
func (*Key) String() string { return "mesh.Key" }

// putHeader writes h and the payload length n into b[:HeaderSize].
func putHeader(b []byte, h Header, n int) {
	b[0], b[1], b[2], b[3] = magic[0], magic[1], Version, 0
	binary.BigEndian.PutUint32(b[4:], h.NetworkID)
	binary.BigEndian.PutUint32(b[8:], h.Epoch)
	binary.BigEndian.PutUint32(b[12:], h.Node)
	binary.BigEndian.PutUint32(b[16:], h.Boot)
	binary.BigEndian.PutUint32(b[20:], h.Counter)
	binary.BigEndian.PutUint16(b[24:], uint16(n))
}

// AppendSeal appends to dst the frame of plaintext (one Thingsee message)
// under h, sealed with key. The nonce is (h.Node, h.Boot, h.Counter): the
// caller must never seal two frames with the same three under one key
// (Sender keeps that rule).
func AppendSeal(dst []byte, key *Key, h Header, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 || len(plaintext) > MaxPayload {
		return dst, ErrPayloadSize
	}
	start := len(dst)
	dst = slices.Grow(dst, Overhead+len(plaintext))[:start+HeaderSize]
	hdr := dst[start:]
	putHeader(hdr, h, len(plaintext))
	return key.aead.Seal(dst, hdr[nonceOffset:nonceOffset+nonceSize], plaintext, hdr[:HeaderSize]), nil
}

// Seal returns the frame of plaintext under h, sealed with key (AppendSeal).
func Seal(key *Key, h Header, plaintext []byte) ([]byte, error) {
	return AppendSeal(nil, key, h, plaintext)
}

// Parse checks a frame's structure and returns its header and its sealed
// part (ciphertext and tag), which aliases frame. It authenticates nothing:
// that is Open's work, and until then every field is the sender's claim.
func Parse(frame []byte) (Header, []byte, error) {
	h, reason, detail := parse(frame)
	switch reason {
	case Truncated:
		return Header{}, nil, fmt.Errorf("%w: %s", ErrTruncated, detail)
	case Malformed:
		return Header{}, nil, fmt.Errorf("%w: %s", ErrMalformed, detail)
	}
	return h, frame[HeaderSize:], nil
}

// parse is Parse without allocation: the header, or Truncated or Malformed
// with a constant detail. A prefix of a valid frame is Truncated; anything
// else that is no frame is Malformed.
func parse(frame []byte) (Header, Reason, string) {
	if len(frame) > MaxFrameSize {
		return Header{}, Malformed, "longer than the maximum frame size"
	}
	for i := 0; i < len(frame) && i < 4; i++ {
		want := [4]byte{magic[0], magic[1], Version, 0}[i]
		if frame[i] != want {
			switch i {
			case 0, 1:
				return Header{}, Malformed, "not a mesh frame (magic)"
			case 2:
				return Header{}, Malformed, "unknown version"
			default:
				return Header{}, Malformed, "reserved flags set"
			}
		}
	}
	if len(frame) < HeaderSize {
		return Header{}, Truncated, "shorter than the header"
	}
	h := Header{
		NetworkID: binary.BigEndian.Uint32(frame[4:]),
		Epoch:     binary.BigEndian.Uint32(frame[8:]),
		Node:      binary.BigEndian.Uint32(frame[12:]),
		Boot:      binary.BigEndian.Uint32(frame[16:]),
		Counter:   binary.BigEndian.Uint32(frame[20:]),
	}
	n := int(binary.BigEndian.Uint16(frame[24:]))
	switch want := HeaderSize + n + TagSize; {
	case n == 0:
		return Header{}, Malformed, "empty payload"
	case n > MaxPayload:
		return Header{}, Malformed, "payload length beyond the maximum"
	case len(frame) < want:
		return Header{}, Truncated, "shorter than its payload length and tag"
	case len(frame) > want:
		return Header{}, Malformed, "bytes after the tag"
	}
	return h, Accepted, ""
}

// Open parses frame and authenticates and decrypts it with key, returning
// its header and message (in a new buffer; frame is left as it was).
// Errors wrap ErrTruncated, ErrMalformed or ErrForged. Open knows no replay
// window: that is the Receiver's.
func Open(key *Key, frame []byte) (Header, []byte, error) {
	h, sealed, err := Parse(frame)
	if err != nil {
		return Header{}, nil, err
	}
	msg, err := key.aead.Open(nil, frame[nonceOffset:nonceOffset+nonceSize], sealed, frame[:HeaderSize])
	if err != nil {
		return Header{}, nil, fmt.Errorf("%w: node %d boot %d counter %d", ErrForged, h.Node, h.Boot, h.Counter)
	}
	return h, msg, nil
}

// openInPlace authenticates and decrypts a parsed frame over its own
// ciphertext: the message aliases frame. On failure GCM clears the
// ciphertext.
func openInPlace(key *Key, frame []byte) ([]byte, bool) {
	sealed := frame[HeaderSize:]
	msg, err := key.aead.Open(sealed[:0], frame[nonceOffset:nonceOffset+nonceSize], sealed, frame[:HeaderSize])
	return msg, err == nil
}

// Sender seals one node's frames in order: it holds the node's header and
// its next frame counter, and refuses to go past the last counter of a
// boot. A Sender is not safe for concurrent use (a node sends in order).
//
// The node's rule (docs/mesh.md, "What a node persists"): before its first
// frame after a boot, it increments its boot counter in non-volatile
// memory and waits until that write is durable; then it counts frames from
// 0. When the counter is spent (ErrNewBootNeeded) it does the same again,
// as if it had rebooted.
type Sender struct {
	h     Header
	key   *Key
	spent bool
}

// NewSender returns the Sender of the node h names, whose next frame has
// counter h.Counter (0 after a boot), sealing with key under h.Epoch.
func NewSender(h Header, key *Key) *Sender { return &Sender{h: h, key: key} }

// Next returns the header of the next frame.
func (s *Sender) Next() Header { return s.h }

// Rekey makes the following frames sealed with key under epoch (after a
// rotation). The counters go on: they are the node's, not the key's.
func (s *Sender) Rekey(epoch uint32, key *Key) { s.h.Epoch, s.key = epoch, key }

// Seal returns the next frame of plaintext and advances the counter. After
// the frame of counter 0xFFFFFFFF it returns ErrNewBootNeeded.
func (s *Sender) Seal(plaintext []byte) ([]byte, error) {
	if s.spent {
		return nil, ErrNewBootNeeded
	}
	f, err := Seal(s.key, s.h, plaintext)
	if err != nil {
		return nil, err
	}
	if s.h.Counter == ^uint32(0) {
		s.spent = true
	} else {
		s.h.Counter++
	}
	return f, nil
}
