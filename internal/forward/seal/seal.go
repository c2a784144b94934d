// Package seal encrypts forwarded payloads to a customer's public key with
// HPKE (RFC 9180, crypto/hpke), so that only the holder of the matching
// private key can read them; "iotransit decrypt" opens them on the
// customer's side, and any RFC 9180 library can too.
//
// # Suite
//
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (RFC 9180 ids
// KEM 0x0020, KDF 0x0001, AEAD 0x0002), base mode (no PSK, no sender
// authentication), single-shot: one HPKE context per payload, one
// encryption with sequence number 0 and empty AAD.
//
// # Wire format
//
// A sealed payload is, with integers big-endian:
//
//	offset  size  field
//	0       4     magic, the ASCII bytes "IOTH"
//	4       1     version, 0x01
//	5       2     KEM id, 0x0020
//	7       2     KDF id, 0x0001
//	9       2     AEAD id, 0x0002
//	11      8     key id: the first 8 bytes of SHA-256 of the recipient's
//	              raw 32-byte X25519 public key (RFC 9180 SerializePublicKey)
//	19      32    enc: the encapsulated (ephemeral) X25519 public key
//	51      n+16  ciphertext: the AES-256-GCM encryption of the n-byte
//	              payload followed by its 16-byte tag
//
// The header is bytes 0 to 18 (19 bytes). The HPKE info is the ASCII string
// "iotransit/forward/v1" followed by the 19 header bytes, so a header that
// was altered (another suite, another key id) makes decryption fail; no AAD
// is used beyond that.
//
// To open a payload elsewhere: check the magic, version and ids, compare the
// key id with your key's, then run RFC 9180 SetupBaseR(enc, skR, info) with
// info = "iotransit/forward/v1" || payload[0:19] and Open(aad="", ct) on
// payload[51:]. In Go that is hpke.Open(key, hpke.HKDFSHA256(),
// hpke.AES256GCM(), info, payload[19:]).
//
// # Keys
//
// Private keys are PKCS#8 PEM ("PRIVATE KEY"), public keys PKIX PEM
// ("PUBLIC KEY"), as OpenSSL writes them ("openssl genpkey -algorithm
// X25519" and "openssl pkey -pubout").
package seal

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
)

// Suite identifiers (RFC 9180 §7).
const (
	KEMID  uint16 = 0x0020 // DHKEM(X25519, HKDF-SHA256)
	KDFID  uint16 = 0x0001 // HKDF-SHA256
	AEADID uint16 = 0x0002 // AES-256-GCM
)

// Layout of a sealed payload.
const (
	magic     = "IOTH"
	version   = 0x01
	keyIDLen  = 8
	headerLen = 4 + 1 + 2 + 2 + 2 + keyIDLen // 19
	encLen    = 32                           // X25519 Nenc
	tagLen    = 16                           // AES-256-GCM Nt
	// Overhead is what sealing adds to a payload: header, enc and tag.
	Overhead = headerLen + encLen + tagLen
)

// infoPrefix starts the HPKE info; the header follows it.
const infoPrefix = "iotransit/forward/v1"

// ErrKeyInvalid is a key that is not an X25519 key in the expected PEM form.
var ErrKeyInvalid = fault.Define("seal.key_invalid", fault.InvalidArgument, "the encryption key is not an X25519 key in PEM form")

var (
	// ErrNotForThisKey is a payload sealed to another key, or one that does
	// not decrypt with this key (altered or damaged).
	ErrNotForThisKey = errors.New("seal: the payload was not sealed to this key")
	// ErrMalformed is input that is not a sealed payload: too short, not
	// starting with "IOTH", or of an unknown version or suite.
	ErrMalformed = errors.New("seal: not a sealed payload")
)

var (
	kdf  = hpke.HKDFSHA256()
	aead = hpke.AES256GCM()
)

// GenerateKey makes an X25519 key pair and returns the private key as
// PKCS#8 PEM ("PRIVATE KEY") and the public key as PKIX PEM ("PUBLIC KEY").
func GenerateKey() (privatePEM, publicPEM []byte, err error) {
	priv, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pkix, err := x509.MarshalPKIXPublicKey(priv.PublicKey())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), nil
}

// keyID is the hex of the first 8 bytes of SHA-256 of the raw public key.
func keyID(raw []byte) [keyIDLen]byte {
	sum := sha256.Sum256(raw)
	var id [keyIDLen]byte
	copy(id[:], sum[:keyIDLen])
	return id
}

// decodePEM returns the first PEM block of b.
func decodePEM(b []byte) (*pem.Block, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, ErrKeyInvalid.WithDetail("no PEM block found")
	}
	return block, nil
}

// Sealer seals payloads to one public key. It is safe for concurrent use.
type Sealer struct {
	pub    hpke.PublicKey
	header [headerLen]byte
	info   []byte
}

var _ forward.Sealer = (*Sealer)(nil)

// ParsePublicKey reads an X25519 public key in PKIX PEM ("PUBLIC KEY") and
// returns a Sealer for it. Anything else (RSA, P-256, a private key) is an
// ErrKeyInvalid fault.
func ParsePublicKey(pemBytes []byte) (*Sealer, error) {
	block, err := decodePEM(pemBytes)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "PUBLIC KEY":
	case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return nil, ErrKeyInvalid.WithDetail("this is a private key: give the public key (PEM \"PUBLIC KEY\") and keep the private key to yourself")
	default:
		return nil, ErrKeyInvalid.WithDetail("want a PEM \"PUBLIC KEY\" block, got %q", truncate(block.Type, 40))
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, ErrKeyInvalid.WithDetail("the public key does not parse")
	}
	ek, ok := k.(*ecdh.PublicKey)
	if !ok || ek.Curve() != ecdh.X25519() {
		return nil, ErrKeyInvalid.WithDetail("want an X25519 public key, got %s", keyKind(k))
	}
	// A low-order point (all zeros, say) parses, but every encryption to it
	// would fail: refuse it now rather than on every delivery.
	probe, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	if _, err := probe.ECDH(ek); err != nil {
		return nil, ErrKeyInvalid.WithDetail("the public key is a low-order point, which cannot be encrypted to")
	}
	pub, err := hpke.NewDHKEMPublicKey(ek)
	if err != nil {
		return nil, ErrKeyInvalid.Wrap(err)
	}
	s := &Sealer{pub: pub}
	s.header = header(keyID(ek.Bytes()))
	s.info = info(s.header[:])
	return s, nil
}

func header(id [keyIDLen]byte) [headerLen]byte {
	var h [headerLen]byte
	copy(h[0:4], magic)
	h[4] = version
	binary.BigEndian.PutUint16(h[5:7], KEMID)
	binary.BigEndian.PutUint16(h[7:9], KDFID)
	binary.BigEndian.PutUint16(h[9:11], AEADID)
	copy(h[11:headerLen], id[:])
	return h
}

func info(header []byte) []byte {
	return append([]byte(infoPrefix), header...)
}

// Seal encrypts plaintext to the Sealer's key; every call uses a fresh
// ephemeral key, so sealing the same plaintext twice gives different
// output. The output is len(plaintext)+Overhead bytes (see the package doc).
func (s *Sealer) Seal(plaintext []byte) ([]byte, error) {
	// hpke.Seal would return enc||ciphertext in a fresh slice; a Sender
	// used once is the same single-shot HPKE and saves copying it again.
	enc, sender, err := hpke.NewSender(s.pub, kdf, aead, s.info)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if len(enc) != encLen {
		return nil, fmt.Errorf("seal: encapsulated key of %d bytes, want %d", len(enc), encLen)
	}
	ct, err := sender.Seal(nil, plaintext)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	out := make([]byte, 0, headerLen+encLen+len(ct))
	out = append(out, s.header[:]...)
	out = append(out, enc...)
	return append(out, ct...), nil
}

// KeyID returns the key id: the hex of the first 8 bytes of SHA-256 of the
// raw public key.
func (s *Sealer) KeyID() string { return hex.EncodeToString(s.header[11:headerLen]) }

// Opener opens payloads sealed to one private key. It is safe for
// concurrent use.
type Opener struct {
	priv hpke.PrivateKey
	id   [keyIDLen]byte
}

// ParsePrivateKey reads an X25519 private key in PKCS#8 PEM ("PRIVATE KEY")
// and returns an Opener for it. Anything else is an ErrKeyInvalid fault.
func ParsePrivateKey(pemBytes []byte) (*Opener, error) {
	block, err := decodePEM(pemBytes)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "PRIVATE KEY":
	case "PUBLIC KEY":
		return nil, ErrKeyInvalid.WithDetail("this is a public key: opening needs the private key (PEM \"PRIVATE KEY\")")
	default:
		return nil, ErrKeyInvalid.WithDetail("want a PEM \"PRIVATE KEY\" block (PKCS#8), got %q", truncate(block.Type, 40))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, ErrKeyInvalid.WithDetail("the private key does not parse")
	}
	ek, ok := k.(*ecdh.PrivateKey)
	if !ok || ek.Curve() != ecdh.X25519() {
		return nil, ErrKeyInvalid.WithDetail("want an X25519 private key, got %s", keyKind(k))
	}
	priv, err := hpke.NewDHKEMPrivateKey(ek)
	if err != nil {
		return nil, ErrKeyInvalid.Wrap(err)
	}
	return &Opener{priv: priv, id: keyID(ek.PublicKey().Bytes())}, nil
}

// KeyID returns the key id of the Opener's public key (see Sealer.KeyID).
func (o *Opener) KeyID() string { return hex.EncodeToString(o.id[:]) }

// PayloadKeyID returns the key id a sealed payload was sealed to, or
// ErrMalformed if sealed is not a sealed payload.
func PayloadKeyID(sealed []byte) (string, error) {
	if err := checkHeader(sealed); err != nil {
		return "", err
	}
	return hex.EncodeToString(sealed[11:headerLen]), nil
}

// checkHeader checks everything but the key id.
func checkHeader(sealed []byte) error {
	n := min(len(sealed), len(magic))
	if n == 0 || string(sealed[:n]) != magic[:n] {
		return fmt.Errorf("%w: it does not start with %q", ErrMalformed, magic)
	}
	if len(sealed) < headerLen {
		return fmt.Errorf("%w: truncated: %d bytes", ErrMalformed, len(sealed))
	}
	if sealed[4] != version {
		return fmt.Errorf("%w: unknown version %d", ErrMalformed, sealed[4])
	}
	kemID := binary.BigEndian.Uint16(sealed[5:7])
	kdfID := binary.BigEndian.Uint16(sealed[7:9])
	aeadID := binary.BigEndian.Uint16(sealed[9:11])
	if kemID != KEMID || kdfID != KDFID || aeadID != AEADID {
		return fmt.Errorf("%w: unsupported suite (KEM 0x%04x, KDF 0x%04x, AEAD 0x%04x)", ErrMalformed, kemID, kdfID, aeadID)
	}
	return nil
}

// Open decrypts a sealed payload. It returns an error wrapping ErrMalformed
// for input that is not a sealed payload, and one wrapping ErrNotForThisKey
// for a payload sealed to another key or altered after sealing.
func (o *Opener) Open(sealed []byte) ([]byte, error) {
	if err := checkHeader(sealed); err != nil {
		return nil, err
	}
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: truncated: %d bytes, at least %d needed", ErrMalformed, len(sealed), Overhead)
	}
	if !bytes.Equal(sealed[11:headerLen], o.id[:]) {
		return nil, fmt.Errorf("%w: sealed to key %x, this is key %x", ErrNotForThisKey, sealed[11:headerLen], o.id[:])
	}
	pt, err := hpke.Open(o.priv, kdf, aead, info(sealed[:headerLen]), sealed[headerLen:])
	if err != nil {
		return nil, fmt.Errorf("%w: it does not decrypt with key %x (altered or damaged)", ErrNotForThisKey, o.id[:])
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

func keyKind(k any) string {
	switch k := k.(type) {
	case *ecdh.PublicKey:
		return fmt.Sprintf("an ECDH %v key", k.Curve())
	case *ecdh.PrivateKey:
		return fmt.Sprintf("an ECDH %v key", k.Curve())
	case *ecdsa.PublicKey:
		return "an ECDSA " + k.Curve.Params().Name + " key"
	case *ecdsa.PrivateKey:
		return "an ECDSA " + k.Curve.Params().Name + " key"
	case *rsa.PublicKey, *rsa.PrivateKey:
		return "an RSA key"
	case ed25519.PublicKey, ed25519.PrivateKey:
		return "an Ed25519 key"
	default:
		return fmt.Sprintf("a %T", k)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
