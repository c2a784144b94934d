package receiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers, and iotransit's mark of a sealed body.
const (
	HeaderID         = "webhook-id"
	HeaderTimestamp  = "webhook-timestamp"
	HeaderSignature  = "webhook-signature"
	HeaderEncryption = "iotransit-encryption"
)

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock, the 5 minutes the Standard Webhooks specification
// recommends: an older request is refused as a possible replay.
const DefaultTolerance = 5 * time.Minute

// Verification failures; the errors of Verify wrap one of them.
var (
	// ErrMissingHeader: a Standard Webhooks header is absent.
	ErrMissingHeader = errors.New("receiver: a webhook signature header is missing")
	// ErrTimestamp: webhook-timestamp is not Unix seconds, or too far from
	// the receiver's clock.
	ErrTimestamp = errors.New("receiver: the webhook timestamp is not acceptable")
	// ErrSignature: no v1 signature matches any of the secrets.
	ErrSignature = errors.New("receiver: no webhook signature matches")
)

// Sizes of a webhook secret's key, in bytes, as the Standard Webhooks
// specification bounds them (and the node enforces).
const (
	MinKeyBytes = 24
	MaxKeyBytes = 64
)

// ParseSecret decodes a Standard Webhooks secret, whsec_ followed by
// base64 (standard alphabet, padded), into the HMAC key of MinKeyBytes to
// MaxKeyBytes.
func ParseSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New("receiver: a webhook secret starts with whsec_")
	}
	key, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, errors.New("receiver: webhook secret: not base64 after whsec_")
	}
	if len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return nil, fmt.Errorf("receiver: webhook secret: the key has %d bytes, want %d to %d", len(key), MinKeyBytes, MaxKeyBytes)
	}
	return key, nil
}

// Verifier checks the Standard Webhooks signature of deliveries with one or
// more secrets: give both the current and the new one while a secret is
// rotated. It is safe for concurrent use.
type Verifier struct {
	keys [][]byte
	// Tolerance is how far a timestamp may be from the clock
	// (DefaultTolerance when zero).
	Tolerance time.Duration
}

// NewVerifier returns a Verifier of the given secrets (whsec_…), at least
// one.
func NewVerifier(secrets ...string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("receiver: a verifier needs at least one secret")
	}
	v := &Verifier{}
	for _, s := range secrets {
		k, err := ParseSecret(s)
		if err != nil {
			return nil, err
		}
		v.keys = append(v.keys, k)
	}
	return v, nil
}

// NewVerifierKeys returns a Verifier of raw HMAC keys (ParseSecret's). An
// empty key is no secret (anyone can sign with it): it never verifies, so a
// Verifier of empty keys only refuses.
func NewVerifierKeys(keys ...[]byte) *Verifier {
	return &Verifier{keys: keys}
}

// Verify checks a delivery's signature headers against its body, at the
// current time.
func (v *Verifier) Verify(body []byte, header http.Header) error {
	return v.VerifyAt(body, header, time.Now())
}

// VerifyAt checks a delivery as Verify does, with now as the clock: one of
// the space-separated "v1,<base64>" entries of webhook-signature must be
// the base64 of HMAC-SHA256(key, id "." timestamp "." body) for one of the
// keys (compared in constant time), and webhook-timestamp must be within
// the tolerance of now.
func (v *Verifier) VerifyAt(body []byte, header http.Header, now time.Time) error {
	id, timestamp, signature := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || timestamp == "" || signature == "" {
		return fmt.Errorf("%w: %s %q, %s %q, %s present %t", ErrMissingHeader,
			HeaderID, truncate(id, 64), HeaderTimestamp, truncate(timestamp, 32), HeaderSignature, signature != "")
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", ErrTimestamp, HeaderTimestamp, truncate(timestamp, 32))
	}
	tol := v.Tolerance
	if tol == 0 {
		tol = DefaultTolerance
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tol || d < -tol {
		return fmt.Errorf("%w: %s %d is %s away from the receiver's clock", ErrTimestamp, HeaderTimestamp, ts, d.Round(time.Second))
	}
	var sigs [][]byte
	for entry := range strings.FieldsSeq(signature) {
		if ver, sig, ok := strings.Cut(entry, ","); ok && ver == "v1" {
			sigs = append(sigs, []byte(sig))
		}
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: %s has no v1 signature", ErrSignature, HeaderSignature)
	}
	for _, key := range v.keys {
		if len(key) == 0 { // no secret: anyone could have signed
			continue
		}
		want := sign(key, id, timestamp, body)
		for _, sig := range sigs {
			if hmac.Equal(sig, want) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: none of %d v1 signatures matches", ErrSignature, len(sigs))
}

// sign returns the base64 of HMAC-SHA256(key, id.timestamp.body).
func sign(key []byte, id, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	sum := mac.Sum(nil)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sum)))
	base64.StdEncoding.Encode(out, sum)
	return out
}

// Sign returns the webhook-signature header of a request with id,
// timestamp and body signed with each key (ParseSecret's), as the node
// signs its deliveries: for testing a receiver.
func Sign(id string, timestamp time.Time, body []byte, keys ...[]byte) string {
	ts := strconv.FormatInt(timestamp.Unix(), 10)
	entries := make([]string, len(keys))
	for i, k := range keys {
		entries[i] = "v1," + string(sign(k, id, ts, body))
	}
	return strings.Join(entries, " ")
}
