// Package seal encrypts forwarded payloads to a customer's public key with
// HPKE (RFC 9180, crypto/hpke), so that only the holder of the matching
// private key can read them; "iotransit decrypt" opens them on the
// customer's side, and any RFC 9180 library can too.
//
// The suite, the wire format and both sides of it are in the public
// package receiver, which customers' Go receivers use to open bodies. This
// package adapts it to the node: a key refused is an ErrKeyInvalid fault (a
// client of the API sees why), and a Sealer is a forward.Sealer.
package seal

import (
	"errors"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/receiver"
)

// Suite identifiers (RFC 9180 §7).
const (
	KEMID  = receiver.KEMID  // DHKEM(X25519, HKDF-SHA256)
	KDFID  = receiver.KDFID  // HKDF-SHA256
	AEADID = receiver.AEADID // AES-256-GCM
)

// Overhead is what sealing adds to a payload: header, enc and tag.
const Overhead = receiver.Overhead

// ErrKeyInvalid is a key that is not an X25519 key in the expected PEM form.
var ErrKeyInvalid = fault.Define("seal.key_invalid", fault.InvalidArgument, "the encryption key is not an X25519 key in PEM form")

var (
	// ErrNotForThisKey is a payload sealed to another key, or one that does
	// not decrypt with this key (altered or damaged).
	ErrNotForThisKey = receiver.ErrNotForThisKey
	// ErrMalformed is input that is not a sealed payload: too short, not
	// starting with "IOTH", or of an unknown version or suite.
	ErrMalformed = receiver.ErrMalformed
)

// Sealer seals payloads to one public key. It is safe for concurrent use.
type Sealer = receiver.Sealer

// Opener opens payloads sealed to one private key. It is safe for
// concurrent use.
type Opener = receiver.Opener

var _ forward.Sealer = (*Sealer)(nil)

// GenerateKey makes an X25519 key pair and returns the private key as
// PKCS#8 PEM ("PRIVATE KEY") and the public key as PKIX PEM ("PUBLIC KEY").
func GenerateKey() (privatePEM, publicPEM []byte, err error) { return receiver.GenerateKey() }

// ParsePublicKey reads an X25519 public key in PKIX PEM ("PUBLIC KEY") and
// returns a Sealer for it. Anything else (RSA, P-256, a private key) is an
// ErrKeyInvalid fault.
func ParsePublicKey(pemBytes []byte) (*Sealer, error) {
	s, err := receiver.ParsePublicKey(pemBytes)
	if err != nil {
		return nil, keyFault(err)
	}
	return s, nil
}

// ParsePrivateKey reads an X25519 private key in PKCS#8 PEM ("PRIVATE KEY")
// and returns an Opener for it. Anything else is an ErrKeyInvalid fault.
func ParsePrivateKey(pemBytes []byte) (*Opener, error) {
	o, err := receiver.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, keyFault(err)
	}
	return o, nil
}

// PayloadKeyID returns the key id a sealed payload was sealed to, or
// ErrMalformed if sealed is not a sealed payload.
func PayloadKeyID(sealed []byte) (string, error) { return receiver.PayloadKeyID(sealed) }

// keyFault turns a *receiver.KeyError into an ErrKeyInvalid fault whose
// detail (written for people) the client sees.
func keyFault(err error) error {
	var ke *receiver.KeyError
	switch {
	case !errors.As(err, &ke):
		return err
	case ke.Detail != "":
		return ErrKeyInvalid.WithDetail("%s", ke.Detail)
	default:
		return ErrKeyInvalid.Wrap(ke.Err)
	}
}
