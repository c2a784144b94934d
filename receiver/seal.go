package receiver

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
)

// Suite identifiers (RFC 9180 §7) of a sealed body.
const (
	KEMID  uint16 = 0x0020 // DHKEM(X25519, HKDF-SHA256)
	KDFID  uint16 = 0x0001 // HKDF-SHA256
	AEADID uint16 = 0x0002 // AES-256-GCM
)

// Layout of a sealed body (see the package documentation).
const (
	magic     = "IOTH"
	version   = 0x01
	keyIDLen  = 8
	headerLen = 4 + 1 + 2 + 2 + 2 + keyIDLen // 19
	encLen    = 32                           // X25519 Nenc
	tagLen    = 16                           // AES-256-GCM Nt
	// Overhead is what sealing adds to a body: header, enc and tag.
	Overhead = headerLen + encLen + tagLen
)

// infoPrefix starts the HPKE info; the header follows it.
const infoPrefix = "iotransit/forward/v1"

var (
	// ErrNotForThisKey is a body sealed to another key, or one that does
	// not decrypt with this key (altered or damaged).
	ErrNotForThisKey = errors.New("seal: the payload was not sealed to this key")
	// ErrMalformed is input that is not a sealed body: too short, not
	// starting with "IOTH", or of an unknown version or suite.
	ErrMalformed = errors.New("seal: not a sealed payload")
)

// KeyError is a key that is not an X25519 key in the expected PEM form.
type KeyError struct {
	// Detail says what is wrong with the key, a sentence for people ("" when
	// Err says it).
	Detail string
	// Err is the underlying error, if any.
	Err error
}

// Error says that the key is not usable, and why.
func (e *KeyError) Error() string {
	s := "the encryption key is not an X25519 key in PEM form"
	if e.Detail != "" {
		return s + ": " + e.Detail
	}
	if e.Err != nil {
		return s + ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *KeyError) Unwrap() error { return e.Err }

func keyError(format string, args ...any) error {
	return &KeyError{Detail: fmt.Sprintf(format, args...)}
}

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

// keyID is the first 8 bytes of SHA-256 of the raw public key.
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
		return nil, keyError("no PEM block found")
	}
	return block, nil
}

// Sealer seals bodies to one public key, as the node does before a
// delivery: a receiver's tests can use it to make sealed bodies. It is
// safe for concurrent use.
type Sealer struct {
	pub    hpke.PublicKey
	header [headerLen]byte
	info   []byte
}

// ParsePublicKey reads an X25519 public key in PKIX PEM ("PUBLIC KEY") and
// returns a Sealer for it. Anything else (RSA, P-256, a private key) is a
// *KeyError.
func ParsePublicKey(pemBytes []byte) (*Sealer, error) {
	block, err := decodePEM(pemBytes)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "PUBLIC KEY":
	case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return nil, keyError("this is a private key: give the public key (PEM \"PUBLIC KEY\") and keep the private key to yourself")
	default:
		return nil, keyError("want a PEM \"PUBLIC KEY\" block, got %q", truncate(block.Type, 40))
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, keyError("the public key does not parse")
	}
	ek, ok := k.(*ecdh.PublicKey)
	if !ok || ek.Curve() != ecdh.X25519() {
		return nil, keyError("want an X25519 public key, got %s", keyKind(k))
	}
	// A low-order point (all zeros, say) parses, but every encryption to it
	// would fail: refuse it now rather than on every delivery.
	probe, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	if _, err := probe.ECDH(ek); err != nil {
		return nil, keyError("the public key is a low-order point, which cannot be encrypted to")
	}
	pub, err := hpke.NewDHKEMPublicKey(ek)
	if err != nil {
		return nil, &KeyError{Err: err}
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
// output. The output is len(plaintext)+Overhead bytes.
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

// Opener opens bodies sealed to one private key. It is safe for
// concurrent use.
type Opener struct {
	priv hpke.PrivateKey
	id   [keyIDLen]byte
}

// ParsePrivateKey reads an X25519 private key in PKCS#8 PEM ("PRIVATE KEY",
// as "iotransit keygen" and "openssl genpkey -algorithm X25519" write it)
// and returns an Opener for it. Anything else is a *KeyError.
func ParsePrivateKey(pemBytes []byte) (*Opener, error) {
	block, err := decodePEM(pemBytes)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "PRIVATE KEY":
	case "PUBLIC KEY":
		return nil, keyError("this is a public key: opening needs the private key (PEM \"PRIVATE KEY\")")
	default:
		return nil, keyError("want a PEM \"PRIVATE KEY\" block (PKCS#8), got %q", truncate(block.Type, 40))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, keyError("the private key does not parse")
	}
	ek, ok := k.(*ecdh.PrivateKey)
	if !ok || ek.Curve() != ecdh.X25519() {
		return nil, keyError("want an X25519 private key, got %s", keyKind(k))
	}
	priv, err := hpke.NewDHKEMPrivateKey(ek)
	if err != nil {
		return nil, &KeyError{Err: err}
	}
	return &Opener{priv: priv, id: keyID(ek.PublicKey().Bytes())}, nil
}

// KeyID returns the key id of the Opener's public key (see Sealer.KeyID).
func (o *Opener) KeyID() string { return hex.EncodeToString(o.id[:]) }

// PayloadKeyID returns the key id a sealed body was sealed to, or an error
// wrapping ErrMalformed if sealed is not a sealed body.
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

// Open decrypts a sealed body. It returns an error wrapping ErrMalformed
// for input that is not a sealed body, and one wrapping ErrNotForThisKey
// for a body sealed to another key or altered after sealing.
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
