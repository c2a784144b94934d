package thingsee

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"
)

// contentIDDomain separates ContentID hashes from any other SHA-256 use.
const contentIDDomain = "iotransit/thingsee/content-id/v1"

// ContentID returns the content-derived storage and de-duplication id of a
// message uploaded by gateway: the lowercase hex of the first 16 bytes of
// SHA-256 over a domain tag, gateway, Tuid, TsmID (decimal), TsRaw and
// SHA-256(Raw), each length-prefixed (8-byte big-endian) so no two
// different inputs join to the same bytes. Identical resends give identical
// ids; any change in the message bytes, the gateway or tsmTs changes it.
func (m Message) ContentID(gateway string) string {
	rawSum := sha256.Sum256(m.Raw)
	// The hashed input is built in one buffer, on the stack for every
	// message of ordinary size (a long gateway or tsmTs text grows it onto
	// the heap), and hashed at once.
	var stack [256]byte
	b := stack[:0]
	field := func(f []byte) {
		b = binary.BigEndian.AppendUint64(b, uint64(len(f)))
		b = append(b, f...)
	}
	field([]byte(contentIDDomain))
	field([]byte(gateway))
	field([]byte(m.Tuid))
	var id [20]byte
	field(strconv.AppendInt(id[:0], int64(m.TsmID), 10))
	field([]byte(m.TsRaw))
	field(rawSum[:])
	sum := sha256.Sum256(b)
	var out [32]byte
	hex.Encode(out[:], sum[:16])
	return string(out[:])
}

// CloudFields are what the cloud adds to an accepted message.
type CloudFields struct {
	// ReceivedAt becomes tsmCloudTs: Unix seconds as a JSON number with
	// millisecond precision, trailing zeros trimmed (1764273600.123 or
	// 1764273600).
	ReceivedAt time.Time
	// Gateway is added as tsmGw when the message has none and it is not
	// empty.
	Gateway string
	// DeploymentGroupID is added as deploymentGroupId when it is not empty
	// and the message has none.
	DeploymentGroupID string
}

// Normalize returns m.Raw with the cloud-added fields appended as new members
// before the closing brace, leaving every original byte as it was, so
// receivers get the message exactly as accepted plus cloud-added fields. The
// members are appended in this order: tsmTs (only when the message has none,
// tsmEv 18; it gets the tsmCloudTs value), tsmCloudTs, tsmGw (when m.Gw is
// empty and f.Gateway is not), deploymentGroupId (when the message has none
// and f.DeploymentGroupID is not empty).
//
// m must come from Validate (Raw a JSON object whose flags match its keys),
// which guarantees the result is valid JSON without duplicate keys. When Raw
// does not end with '}' (whitespace aside) a copy of Raw is returned as is.
func (m Message) Normalize(f CloudFields) []byte { return m.AppendNormalized(nil, f) }

// AppendNormalized appends Normalize's result to dst and returns the
// extended buffer, for a caller that reuses one buffer for many messages.
func (m Message) AppendNormalized(dst []byte, f CloudFields) []byte {
	// Find the closing brace, allowing trailing whitespace after it.
	end := len(m.Raw) - 1
	for end >= 0 && isSpace(m.Raw[end]) {
		end--
	}
	if end < 0 || m.Raw[end] != '}' {
		return append(dst, m.Raw...)
	}
	// The object has no members when only whitespace separates the braces.
	prev := end - 1
	for prev >= 0 && isSpace(m.Raw[prev]) {
		prev--
	}
	empty := prev >= 0 && m.Raw[prev] == '{'

	var ts [24]byte // "-" and 19 digits, ".", 3 digits
	cloudTs := appendCloudTs(ts[:0], f.ReceivedAt)
	out := dst
	if need := len(m.Raw) + len(cloudTs)*2 + len(f.Gateway) + len(f.DeploymentGroupID) + 64; cap(out)-len(out) < need {
		// As slices.Grow, but one allocation under the race detector too.
		out = make([]byte, len(dst), len(dst)+need)
		copy(out, dst)
	}
	out = append(out, m.Raw[:end]...)
	sep := func() {
		if !empty {
			out = append(out, ',')
		}
		empty = false
	}
	if !m.HasTs {
		sep()
		out = append(out, `"tsmTs":`...)
		out = append(out, cloudTs...)
	}
	sep()
	out = append(out, `"tsmCloudTs":`...)
	out = append(out, cloudTs...)
	if m.Gw == "" && f.Gateway != "" {
		sep()
		out = append(out, `"tsmGw":`...)
		out = appendJSONString(out, f.Gateway)
	}
	if !m.HasDeploymentGroup && f.DeploymentGroupID != "" {
		sep()
		out = append(out, `"deploymentGroupId":`...)
		out = appendJSONString(out, f.DeploymentGroupID)
	}
	return append(out, m.Raw[end:]...)
}

// appendCloudTs appends t as Unix seconds with millisecond precision,
// trailing fractional zeros (and a bare point) trimmed.
func appendCloudTs(b []byte, t time.Time) []byte {
	ms := t.UnixMilli()
	if ms < 0 {
		b = append(b, '-')
		ms = -ms
	}
	b = strconv.AppendInt(b, ms/1000, 10)
	frac := ms % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

// appendJSONString appends s as a JSON string literal, escaping quotes,
// backslashes and control characters and replacing invalid UTF-8 with
// U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
