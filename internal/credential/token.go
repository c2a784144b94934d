// Bearer tokens: secrets shown once and stored only as a hash.

package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// NewToken returns a new bearer token with prefix, and its id and secret.
// A token is prefix + id + "_" + secret: the id (16 hex digits) names the
// stored record, the secret (32 random bytes, base64url) is stored only as
// its hash (HashSecret). API keys have this form, and so do the registry's
// gateway enrollment tokens.
func NewToken(prefix string) (token, id, secret string, err error) {
	if id, err = randomHex(8); err != nil {
		return "", "", "", err
	}
	if secret, err = newSecret(); err != nil {
		return "", "", "", err
	}
	return prefix + id + "_" + secret, id, secret, nil
}

// ParseToken splits a token of NewToken's form with prefix into its id and
// secret; ok is false for any other string.
func ParseToken(prefix, token string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(token, prefix)
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, "_")
	if !found || !validID(id) || len(secret) != 43 {
		return "", "", false
	}
	return id, secret, true
}

// HashSecret returns the hash a secret is stored as: SHA-256 over domain
// (one per kind of secret, such as "iotransit/credential/v1"), a NUL byte
// and the secret.
func HashSecret(domain, secret string) []byte {
	h := sha256.Sum256([]byte(domain + "\x00" + secret))
	return h[:]
}

// SecretMatches reports, in constant time, whether secret is the one
// stored as hash under domain.
func SecretMatches(domain, secret string, hash []byte) bool {
	return subtle.ConstantTimeCompare(HashSecret(domain, secret), hash) == 1
}

// secretDomain is the HashSecret domain of API key and OAuth2 client secrets.
const secretDomain = "iotransit/credential/v1"

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("credential: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("credential: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// validID reports whether id is a credential id this package made (hex).
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
