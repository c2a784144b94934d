// Package thingsee owns the Thingsee message model: the header and property
// schema per tsmId, the strict validation of gateway uploads, and the
// normalisation that adds cloud fields (tsmCloudTs, tsmGw, deploymentGroupId)
// to an accepted message without touching its original bytes.
//
// The format facts come from shared/testdata/thingsee/README.md, which
// summarises Haltian's public developer documentation. A gateway upload is one
// JSON object or a JSON array of objects; Validate splits it into accepted
// messages and rejections, each rejection carrying a stable code and one
// sentence an integration developer can act on.
//
// Validation first requires the payload to pass utf8.Valid and json.Valid,
// then walks each object's tokens (walk.go) instead of decoding into maps, so
// duplicate keys, which encoding/json would silently resolve to the last one
// (a parser differential), are seen and refused, as are keys that differ
// only in letter case, which case-insensitive decoders would merge. The
// tests keep a json.Decoder.Token walker as the reference and the fuzz
// target requires both to read every object identically. The same walk
// enforces the structural limits of every message whatever its tsmId
// (limits.go: depth, keys, arrays, key and string text and length, number
// length), so a message no schema checks cannot carry shapes a receiver
// chokes on. README.md describes every check, limit and code.
package thingsee

import (
	"time"
)

// Rejection codes. They are stable: the ingest stores them with rejected
// messages, reports them to gateways and uses them as metric labels. Each
// has a fault definition (faults.go, Fault), so docs/errors.md lists it.
const (
	// CodePayloadInvalid means the payload is not valid UTF-8 JSON (a
	// leading byte order mark included), has trailing data after the value,
	// or is an empty array.
	CodePayloadInvalid = "thingsee.payload_invalid"
	// CodeNotObject means the payload, or one array element, is not a JSON
	// object.
	CodeNotObject = "thingsee.not_object"
	// CodeTooLarge means one message object is larger than MaxMessageBytes.
	CodeTooLarge = "thingsee.too_large"
	// CodeTooMany means an array payload holds more than MaxMessages elements.
	CodeTooMany = "thingsee.too_many"
	// CodeDuplicateKey means an object repeats a key, at the top level also
	// when the repetition differs only in letter case.
	CodeDuplicateKey = "thingsee.duplicate_key"
	// CodeFieldMissing means a required header field or property is absent.
	CodeFieldMissing = "thingsee.field_missing"
	// CodeFieldType means a field has the wrong JSON type (for example a
	// string where an integer is required, or 1.5 for an integer field).
	CodeFieldType = "thingsee.field_type"
	// CodeFieldRange means a field has the right type but a value outside its
	// allowed range, length or set.
	CodeFieldRange = "thingsee.field_range"
	// CodeFieldUnknown means a property is not part of the schema of a known
	// tsmId, or a key imitates a header field with different letter case.
	CodeFieldUnknown = "thingsee.field_unknown"
	// CodeTuidFormat means tsmTuid (or a heartbeat tuid) is not a 17-character
	// Thingsee TUID.
	CodeTuidFormat = "thingsee.tuid_format"
	// CodeGatewayMismatch means tsmGw names a gateway other than the
	// authenticated uploader.
	CodeGatewayMismatch = "thingsee.gateway_mismatch"
	// CodeTsFuture means tsmTs is further ahead of the cloud clock than
	// MaxFutureSkew.
	CodeTsFuture = "thingsee.ts_future"
	// CodeTsInvalid means tsmTs is not finite or lies before 2000-01-01 (the
	// device clock was not set).
	CodeTsInvalid = "thingsee.ts_invalid"
	// CodeDownlinkField means the message carries tsmDstTuid, a downlink
	// command field that is never valid in an uplink.
	CodeDownlinkField = "thingsee.downlink_field"
	// CodeCloudField means the message carries tsmCloudTs, which only the
	// cloud sets.
	CodeCloudField = "thingsee.cloud_field"
	// CodeUnknownID means the tsmId is not in the schema table and the
	// validator was built with RejectUnknownIDs.
	CodeUnknownID = "thingsee.unknown_id"

	// Structural limits (limits.go), checked in every message whatever its
	// tsmId.

	// CodeTooDeep means objects and arrays are nested deeper than MaxDepth
	// (or, for a whole payload, deeper than any JSON reader here accepts).
	CodeTooDeep = "thingsee.too_deep"
	// CodeTooManyKeys means an object holds more than MaxObjectKeys keys, or
	// the message more than MaxKeys in all its objects.
	CodeTooManyKeys = "thingsee.too_many_keys"
	// CodeArrayTooLong means an array holds more than MaxArrayElements
	// elements.
	CodeArrayTooLong = "thingsee.array_too_long"
	// CodeKeyTooLong means a key is longer than MaxKeyBytes once unescaped.
	CodeKeyTooLong = "thingsee.key_too_long"
	// CodeKeyInvalid means a key holds a control character (NUL included),
	// a format character (such as a bidirectional override), a line or
	// paragraph separator, or an unpaired UTF-16 surrogate escape.
	CodeKeyInvalid = "thingsee.key_invalid"
	// CodeStringTooLong means a string value is longer than MaxStringBytes
	// once unescaped.
	CodeStringTooLong = "thingsee.string_too_long"
	// CodeStringInvalid means a string value holds a NUL character or an
	// unpaired UTF-16 surrogate escape, so it is not valid Unicode text.
	CodeStringInvalid = "thingsee.string_invalid"
	// CodeNumberTooLong means a number is written with more than
	// MaxNumberBytes characters.
	CodeNumberTooLong = "thingsee.number_too_long"
)

// Defaults applied by NewValidator to zero Options fields.
const (
	// DefaultMaxFutureSkew is how far tsmTs may be ahead of the clock.
	DefaultMaxFutureSkew = 10 * time.Minute
	// DefaultMaxMessages is the largest number of objects in one array
	// payload.
	DefaultMaxMessages = 1000
	// DefaultMaxMessageBytes is the largest size of one message object.
	DefaultMaxMessageBytes = 16384

	// DefaultMaxDepth is how deep objects and arrays may nest, the message
	// object being level 1 (Thingsee messages use 3: heartbeats entries,
	// dist rows).
	DefaultMaxDepth = 32
	// MaxMaxDepth caps MaxDepth: deeper nesting is refused whatever the
	// options say, so the walk's recursion stays bounded.
	MaxMaxDepth = 1000
	// DefaultMaxObjectKeys is the most keys one object may hold.
	DefaultMaxObjectKeys = 256
	// DefaultMaxKeys is the most keys one message may hold in all its
	// objects together (1000 heartbeats entries need 2000).
	DefaultMaxKeys = 4096
	// DefaultMaxArrayElements is the most elements one array may hold
	// (heartbeats may hold 1000).
	DefaultMaxArrayElements = 1024
	// DefaultMaxKeyBytes is the longest key, in bytes once unescaped.
	DefaultMaxKeyBytes = 128
	// DefaultMaxStringBytes is the longest string value, in bytes once
	// unescaped.
	DefaultMaxStringBytes = 4096
	// DefaultMaxNumberBytes is the longest number, in characters as
	// written.
	DefaultMaxNumberBytes = 64
)

// Options configures a Validator. The zero value is a usable, strict
// configuration that accepts unknown tsmIds with only their header checked.
type Options struct {
	// Now is the clock used for the future-timestamp check; nil means
	// time.Now.
	Now func() time.Time
	// MaxFutureSkew is how far tsmTs may be ahead of Now; 0 means
	// DefaultMaxFutureSkew and a negative value means no skew at all.
	MaxFutureSkew time.Duration
	// RejectUnknownIDs refuses a tsmId that is not in the schema table. When
	// false (the default) such a message is accepted with only the header
	// checked, so data from newer firmware is not lost.
	RejectUnknownIDs bool
	// MaxMessages is the largest number of objects in one array payload; 0
	// (or a negative value) means DefaultMaxMessages.
	MaxMessages int
	// MaxMessageBytes is the largest size of one message object in bytes; 0
	// (or a negative value) means DefaultMaxMessageBytes.
	MaxMessageBytes int

	// The structural limits below hold for every message whatever its
	// tsmId (README.md, "Structural limits"); 0 (or a negative value)
	// means the Default* of the same name.

	// MaxDepth is how deep objects and arrays may nest, the message object
	// being level 1; values above MaxMaxDepth mean MaxMaxDepth.
	MaxDepth int
	// MaxObjectKeys is the most keys one object may hold.
	MaxObjectKeys int
	// MaxKeys is the most keys one message may hold in all its objects.
	MaxKeys int
	// MaxArrayElements is the most elements one array may hold.
	MaxArrayElements int
	// MaxKeyBytes is the longest key in bytes, once unescaped.
	MaxKeyBytes int
	// MaxStringBytes is the longest string value in bytes, once unescaped.
	MaxStringBytes int
	// MaxNumberBytes is the longest number in characters, as written.
	MaxNumberBytes int
}

// Validator checks gateway uploads against the Thingsee schema. It holds no
// mutable state and is safe for concurrent use.
type Validator struct {
	now             func() time.Time
	skew            time.Duration
	rejectUnknown   bool
	maxMessages     int
	maxMessageBytes int
	lim             limits
}

// NewValidator returns a Validator configured by o, with defaults applied to
// zero fields.
func NewValidator(o Options) *Validator {
	v := &Validator{
		now:             o.Now,
		skew:            o.MaxFutureSkew,
		rejectUnknown:   o.RejectUnknownIDs,
		maxMessages:     o.MaxMessages,
		maxMessageBytes: o.MaxMessageBytes,
	}
	if v.now == nil {
		v.now = time.Now
	}
	switch {
	case v.skew == 0:
		v.skew = DefaultMaxFutureSkew
	case v.skew < 0:
		v.skew = 0
	}
	if v.maxMessages <= 0 {
		v.maxMessages = DefaultMaxMessages
	}
	if v.maxMessageBytes <= 0 {
		v.maxMessageBytes = DefaultMaxMessageBytes
	}
	v.lim = newLimits(o)
	return v
}

// Message is one accepted Thingsee message.
type Message struct {
	// Index is the position of the message in the payload (0 for a single
	// object).
	Index int
	// TsmID is the message id (tsmId).
	TsmID int
	// TsmEv is the event type (tsmEv).
	TsmEv int
	// TsmTs is tsmTs in Unix seconds; 0 when absent, which is allowed only
	// for tsmEv 18.
	TsmTs float64
	// HasTs reports whether the message carries tsmTs.
	HasTs bool
	// TsRaw is the exact JSON number text of tsmTs as received ("" when
	// absent).
	TsRaw string
	// Tuid is the sensor's TUID (tsmTuid).
	Tuid string
	// Gw is tsmGw as in the message, "" when absent.
	Gw string
	// HasDeploymentGroup reports whether the message itself carries
	// deploymentGroupId.
	HasDeploymentGroup bool
	// Raw is the object's bytes exactly as they were in the payload (not
	// re-encoded, without surrounding whitespace). It is a copy owned by the
	// Result, never an alias of the caller's payload buffer. The strings
	// above share its memory (no second copy), so it must not be modified.
	Raw []byte
}

// Rejection is one message (or the whole payload, Index -1) that failed
// validation.
type Rejection struct {
	// Index is the position in the payload, -1 when the whole payload is
	// refused.
	Index int
	// Code is one of the stable Code* constants (each a fault definition:
	// Fault).
	Code string
	// Field is the offending field name, "" when the problem is not about
	// one field.
	Field string
	// Reason is one sentence for an integration developer. It is never empty
	// and never holds more than 64 bytes of any input value; non-printable
	// characters of echoed input are replaced with '?'.
	Reason string
	// TsmID is the message's tsmId when it is a valid one, 0 otherwise.
	TsmID int
	// Tuid is the message's tsmTuid when it is a valid TUID, or a malformed
	// one of at most 32 bytes of [A-Za-z0-9._-]; "" otherwise.
	Tuid string
	// Raw is the rejected object's bytes, or for Index -1 the whole payload;
	// both are truncated to MaxMessageBytes. Field and Tuid may share its
	// memory, so it must not be modified.
	Raw []byte
}

// Result is the outcome of validating one upload. Accepted and Rejected are
// each in payload order; together they cover every array element exactly
// once, unless the whole payload was refused (one Rejection with Index -1).
type Result struct {
	// Accepted holds the messages that passed validation.
	Accepted []Message
	// Rejected holds the messages (or the payload) that failed.
	Rejected []Rejection
}
