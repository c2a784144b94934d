package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/receiver"
)

// Standard Webhooks headers, as receivers read them (package receiver).
const (
	HeaderID        = receiver.HeaderID
	HeaderTimestamp = receiver.HeaderTimestamp
	HeaderSignature = receiver.HeaderSignature
	// HeaderEncryption marks a body sealed with HPKE.
	HeaderEncryption = receiver.HeaderEncryption
)

// Sign returns the webhook-signature header value for a request: for each
// key, v1,<base64 HMAC-SHA256(key, id.timestamp.body)> with the timestamp
// in Unix seconds, separated by spaces. A receiver accepts the request when
// any one of them matches, which is what lets a secret be rotated.
func Sign(keys [][]byte, id string, ts time.Time, body []byte) string {
	var prefix [24]byte
	stamp := strconv.AppendInt(prefix[:0], ts.Unix(), 10)
	var sb strings.Builder
	sb.Grow(len(keys) * (4 + base64.StdEncoding.EncodedLen(sha256.Size)))
	var sum [sha256.Size]byte
	var enc [44]byte // base64 of 32 bytes
	for i, k := range keys {
		h := hmac.New(sha256.New, k)
		h.Write([]byte(id))
		h.Write([]byte{'.'})
		h.Write(stamp)
		h.Write([]byte{'.'})
		h.Write(body)
		base64.StdEncoding.Encode(enc[:], h.Sum(sum[:0]))
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.Write(enc[:])
	}
	return sb.String()
}
