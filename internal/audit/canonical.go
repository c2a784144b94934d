package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Domain tags of the canonical encodings (see the package documentation).
const (
	entryDomain      = "iotransit/audit/v1/entry"
	checkpointDomain = "iotransit/audit/v1/checkpoint"
)

// zeroHash is the Prev of entry 1.
var zeroHash = strings.Repeat("0", 64)

// Limits applied by Append to what a caller passes.
const (
	maxDetailKeys  = 16
	maxDetailKey   = 64
	maxFieldLength = 256
)

// encoder builds a canonical encoding; see the package documentation.
type encoder struct{ buf []byte }

func (e *encoder) str(s string) {
	// Every stored message is far below 4 GiB (JetStream's maximum message
	// size is 64 MiB), so the length always fits; clamp rather than wrap.
	n := len(s)
	if n > math.MaxUint32 {
		n = math.MaxUint32
	}
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(n))
	e.buf = append(e.buf, s[:n]...)
}

func (e *encoder) u32(n uint32) { e.buf = binary.BigEndian.AppendUint32(e.buf, n) }
func (e *encoder) u64(n uint64) { e.buf = binary.BigEndian.AppendUint64(e.buf, n) }

func (e *encoder) time(t time.Time) {
	e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(t.Unix()))
	e.u32(uint32(t.Nanosecond()))
}

// entryPreimage returns the canonical encoding of every field of e except
// Hash.
func entryPreimage(e *Entry) []byte {
	enc := encoder{buf: make([]byte, 0, 256)}
	enc.str(entryDomain)
	enc.str(e.Tenant)
	enc.u64(e.Seq)
	enc.time(e.Time)
	enc.str(e.Actor)
	enc.str(e.Action)
	enc.str(e.Target)
	enc.str(e.Source)
	enc.str(e.Outcome)
	keys := make([]string, 0, len(e.Detail))
	for k := range e.Detail {
		keys = append(keys, k)
	}
	sort.Strings(keys) // byte order
	enc.u32(uint32(len(keys)))
	for _, k := range keys {
		enc.str(k)
		enc.str(e.Detail[k])
	}
	enc.str(e.Prev)
	return enc.buf
}

// hashEntry returns the hash an entry must carry: the lowercase hex SHA-256
// of its canonical encoding.
func hashEntry(e *Entry) string {
	sum := sha256.Sum256(entryPreimage(e))
	return hex.EncodeToString(sum[:])
}

// checkpointMessage returns the bytes a checkpoint's signature covers.
func checkpointMessage(c *Checkpoint) []byte {
	enc := encoder{buf: make([]byte, 0, 160)}
	enc.str(checkpointDomain)
	enc.str(c.Tenant)
	enc.u64(c.Seq)
	enc.str(c.Hash)
	enc.time(c.Time)
	enc.str(c.KeyID)
	return enc.buf
}

// KeyID returns the identifier of a checkpoint signing key: the lowercase hex
// of the first 8 bytes of the SHA-256 of the public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// signCheckpoint fills in KeyID and Signature.
func signCheckpoint(c *Checkpoint, key ed25519.PrivateKey) {
	c.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	c.Signature = ed25519.Sign(key, checkpointMessage(c))
}

// checkSignature reports why a checkpoint's signature is not good under the
// key its KeyID names among known (key id -> public key), or "" when it is.
// A checkpoint naming a key the system does not know fails.
func checkSignature(c *Checkpoint, known map[string]ed25519.PublicKey) string {
	if len(known) == 0 {
		return fmt.Sprintf("checkpoint at %d cannot be checked: no valid public key was given", c.Seq)
	}
	pub, ok := known[c.KeyID]
	if !ok {
		return fmt.Sprintf("checkpoint at %d was signed by an unknown key (key id %q)", c.Seq, clip(c.KeyID, 32))
	}
	if len(c.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, checkpointMessage(c), c.Signature) {
		return fmt.Sprintf("checkpoint at %d has a bad signature", c.Seq)
	}
	return ""
}

// keyMap indexes valid Ed25519 public keys by their KeyID.
func keyMap(pubs []ed25519.PublicKey) map[string]ed25519.PublicKey {
	m := make(map[string]ed25519.PublicKey, len(pubs))
	for _, p := range pubs {
		if len(p) == ed25519.PublicKeySize {
			m[KeyID(p)] = p
		}
	}
	return m
}

// clip shortens s for a report sentence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return truncate(s, n) + "..."
}

// clean makes s valid UTF-8 (invalid bytes become U+FFFD) no longer than max
// bytes, cut at a rune boundary. JSON would replace invalid bytes on its own,
// after hashing, and the stored entry would then no longer match its hash.
func clean(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return truncate(s, max)
}

// truncate cuts valid UTF-8 s to at most max bytes at a rune boundary.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// cleanDetail applies the detail limits: keys and values are made valid
// UTF-8, keys are cut to 64 bytes and values to 256, empty keys are dropped,
// and of more than 16 keys the first 16 in byte order are kept. It reports
// whether anything was dropped.
func cleanDetail(in map[string]string) (map[string]string, bool) {
	if len(in) == 0 {
		return nil, false
	}
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string, min(len(in), maxDetailKeys))
	dropped := false
	for _, k := range keys {
		ck := clean(k, maxDetailKey)
		if ck == "" {
			dropped = true
			continue
		}
		if _, dup := out[ck]; dup {
			dropped = true
			continue
		}
		if len(out) == maxDetailKeys {
			dropped = true
			break
		}
		out[ck] = clean(in[k], maxFieldLength)
	}
	return out, dropped
}

// decodeJSON decodes one JSON object into v, refusing unknown fields and
// trailing data.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// errNotStoredForm says that a message decodes, but not from the exact bytes
// Append writes: it was re-encoded, e.g. with a repeated key, a key in
// another case, an escaped character or another spelling of the time.
var errNotStoredForm = errors.New("its bytes are not in the exact form Append writes")

// decodeEntry decodes a stored entry and checks that its bytes are exactly
// its stored form, so that no byte of it can change unnoticed, not even
// without changing its meaning.
func decodeEntry(data []byte) (Entry, error) {
	var e Entry
	if err := decodeJSON(data, &e); err != nil {
		return e, err
	}
	if !bytes.Equal(data, appendEntryJSON(nil, &e)) {
		return e, errNotStoredForm
	}
	return e, nil
}

// decodeCheckpoint is decodeEntry for a checkpoint.
func decodeCheckpoint(data []byte) (Checkpoint, error) {
	var c Checkpoint
	if err := decodeJSON(data, &c); err != nil {
		return c, err
	}
	if !bytes.Equal(data, appendCheckpointJSON(nil, &c)) {
		return c, errNotStoredForm
	}
	return c, nil
}

// appendEntryJSON appends the stored form of e: the JSON object
//
//	{"tenant":…,"seq":…,"time":…,"actor":…,"action":…,"target":…,
//	 "source":…,"outcome":…,"detail":{…},"prev":…,"hash":…}
//
// without spaces, with "detail" left out when empty and its keys in byte
// order, the time as RFC 3339 in UTC with nanoseconds and no trailing zeros,
// and strings escaped only where JSON requires it (see appendJSONString).
func appendEntryJSON(b []byte, e *Entry) []byte {
	b = append(b, `{"tenant":`...)
	b = appendJSONString(b, e.Tenant)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"time":`...)
	b = appendJSONString(b, e.Time.UTC().Format(time.RFC3339Nano))
	for _, f := range [...]struct{ k, v string }{
		{`,"actor":`, e.Actor}, {`,"action":`, e.Action}, {`,"target":`, e.Target},
		{`,"source":`, e.Source}, {`,"outcome":`, e.Outcome},
	} {
		b = append(b, f.k...)
		b = appendJSONString(b, f.v)
	}
	if len(e.Detail) > 0 {
		keys := make([]string, 0, len(e.Detail))
		for k := range e.Detail {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, `,"detail":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, e.Detail[k])
		}
		b = append(b, '}')
	}
	b = append(b, `,"prev":`...)
	b = appendJSONString(b, e.Prev)
	b = append(b, `,"hash":`...)
	b = appendJSONString(b, e.Hash)
	return append(b, '}')
}

// appendCheckpointJSON appends the stored form of c:
// {"tenant":…,"seq":…,"hash":…,"time":…,"keyId":…,"signature":…} with the
// signature in standard padded base64.
func appendCheckpointJSON(b []byte, c *Checkpoint) []byte {
	b = append(b, `{"tenant":`...)
	b = appendJSONString(b, c.Tenant)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = append(b, `,"hash":`...)
	b = appendJSONString(b, c.Hash)
	b = append(b, `,"time":`...)
	b = appendJSONString(b, c.Time.UTC().Format(time.RFC3339Nano))
	b = append(b, `,"keyId":`...)
	b = appendJSONString(b, c.KeyID)
	b = append(b, `,"signature":"`...)
	b = base64.StdEncoding.AppendEncode(b, c.Signature)
	return append(b, `"}`...)
}

// appendJSONString appends s as a JSON string: '"' and '\' are escaped with
// a backslash, bytes below 0x20 as \u00xx (lowercase hex), everything else
// is written as it is. Invalid UTF-8 is written as U+FFFD, as a JSON decoder
// would read it; Append never stores any.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
