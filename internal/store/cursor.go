package store

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// A cursor is 22 bytes, base64url without padding (30 characters):
//
//	[0]      version (1)
//	[1]      flags: bit 0 oldest-first, bit 1 rejected-message query
//	[2:10]   stream sequence, big endian: oldest-first continues at this
//	         sequence, newest-first continues below it
//	[10:18]  hash of the query's filters and tenant (the query it binds)
//	[18:22]  checksum of bytes 0..17
//
// The checksum is not a MAC: it detects a damaged or edited cursor, not a
// forged one. Nothing rides on that: a cursor only positions a walk inside
// the tenant's own stream under filters the caller chose, so a forged
// cursor can reach nothing the caller could not ask for directly.
const (
	cursorVersion = 1
	cursorLen     = 22

	flagOldest   = 1 << 0
	flagRejected = 1 << 1
)

type cursor struct {
	flags byte
	seq   uint64
	hash  [8]byte
}

func (c cursor) encode() string {
	var b [cursorLen]byte
	b[0] = cursorVersion
	b[1] = c.flags
	binary.BigEndian.PutUint64(b[2:10], c.seq)
	copy(b[10:18], c.hash[:])
	sum := sha256.Sum256(b[:18])
	copy(b[18:], sum[:4])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// decodeCursor parses s and checks that it belongs to the query with these
// flags and filter hash.
func decodeCursor(s string, flags byte, hash [8]byte) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != cursorLen || b[0] != cursorVersion {
		return cursor{}, ErrCursorInvalid.WithDetail("cursor must be the next value of a previous page, unchanged")
	}
	sum := sha256.Sum256(b[:18])
	if string(sum[:4]) != string(b[18:]) {
		return cursor{}, ErrCursorInvalid.WithDetail("cursor must be the next value of a previous page, unchanged")
	}
	c := cursor{flags: b[1], seq: binary.BigEndian.Uint64(b[2:10])}
	copy(c.hash[:], b[10:18])
	if c.flags != flags || c.hash != hash {
		return cursor{}, ErrCursorInvalid.WithDetail("cursor belongs to a query with other filters or another order: repeat the filters and order of the first page")
	}
	if c.seq == 0 {
		return cursor{}, ErrCursorInvalid.WithDetail("cursor must be the next value of a previous page, unchanged")
	}
	return c, nil
}

// filterHash binds a cursor to a tenant and to every filter of its query
// (not to the limit, which may change from page to page).
func filterHash(parts ...string) [8]byte {
	h := sha256.New()
	h.Write([]byte("iotransit/store/cursor/v1"))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}

func timeKey(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}
