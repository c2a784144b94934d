package queue

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// The sealed form of a record or side value: a format byte, the nonce
// (the session index and the session's invocation counter, both big
// endian), then the AES-256-GCM ciphertext and its 16-byte tag.
const (
	sealFormat     = 1
	nonceLen       = 4 + 8
	headerLen      = 1 + nonceLen
	tagLen         = 16
	sealOverhead   = headerLen + tagLen
	recordOverhead = 8 + sealOverhead // the 8-byte record key as well
	keyLen         = 32
	saltLen        = 32
	fileIDLen      = 16
)

// Kinds of sealed values, part of the associated data so that a side value
// never opens as a record nor a record as a side value.
const (
	kindRecord byte = 'r'
	kindSide   byte = 's'
)

const (
	adPrefix      = "iotransit/queue/v1"
	infoRecordKey = "iotransit/queue/v1 session key "
	infoKeyCheck  = "iotransit/queue/v1 key check"
)

// sealer seals and opens the values of one queue file. aeads holds one
// AEAD per session (one per Open of the file), derived from the data key;
// it is fixed once Open returns, so readers share it without a lock. Only
// the committer seals, so session and counter need no lock either.
type sealer struct {
	fileID  []byte
	aeads   map[uint32]cipher.AEAD
	session uint32
	counter uint64
}

// sessionAEAD derives the AES-256-GCM key of one session: HKDF-SHA256 of the
// data key with the session's random salt, bound to the file's id.
func sessionAEAD(dataKey, salt, fileID []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, dataKey, salt, infoRecordKey+string(fileID), keyLen)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// keyCheck is what the file stores to recognise its data key: an HKDF
// output, which tells nothing about the key.
func keyCheck(dataKey, fileID []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, dataKey, fileID, infoKeyCheck, keyLen)
}

// checkKey reports whether dataKey is the key the file was created with.
func checkKey(dataKey, fileID, stored []byte) (bool, error) {
	want, err := keyCheck(dataKey, fileID)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(want, stored) == 1, nil
}

// ad is the associated data of a value: the format, the file, the kind and
// the value's place (a record's id as its 8-byte key, a side value's key).
func (s *sealer) ad(kind byte, place []byte) []byte {
	ad := make([]byte, 0, len(adPrefix)+len(s.fileID)+1+len(place))
	ad = append(ad, adPrefix...)
	ad = append(ad, s.fileID...)
	ad = append(ad, kind)
	return append(ad, place...)
}

// seal encrypts plaintext for its place under the current session, with
// the next nonce of the session's counter (never reused: the counter only
// rises, whether or not the transaction that carries the value commits).
func (s *sealer) seal(kind byte, place, plaintext []byte) ([]byte, error) {
	if s.counter == ^uint64(0) {
		return nil, ErrNonceSpace
	}
	out := make([]byte, headerLen, headerLen+len(plaintext)+tagLen)
	out[0] = sealFormat
	binary.BigEndian.PutUint32(out[1:5], s.session)
	binary.BigEndian.PutUint64(out[5:13], s.counter)
	s.counter++
	return s.aeads[s.session].Seal(out, out[1:headerLen], plaintext, s.ad(kind, place)), nil
}

// open authenticates and decrypts a sealed value read at its place.
func (s *sealer) open(kind byte, place, sealed []byte) ([]byte, error) {
	if len(sealed) < sealOverhead || sealed[0] != sealFormat {
		return nil, fmt.Errorf("%w: value of %d bytes is not in the sealed format", ErrCorrupt, len(sealed))
	}
	aead, ok := s.aeads[binary.BigEndian.Uint32(sealed[1:5])]
	if !ok {
		return nil, fmt.Errorf("%w: value sealed in an unknown session", ErrCorrupt)
	}
	pt, err := aead.Open(nil, sealed[1:headerLen], sealed[headerLen:], s.ad(kind, place))
	if err != nil {
		return nil, fmt.Errorf("%w: value does not authenticate (altered, moved or sealed under another key)", ErrCorrupt)
	}
	return pt, nil
}

// sessionOf returns the session a sealed value was sealed in (0, false
// when the value is too short to tell).
func sessionOf(sealed []byte) (uint32, bool) {
	if len(sealed) < headerLen {
		return 0, false
	}
	return binary.BigEndian.Uint32(sealed[1:5]), true
}
