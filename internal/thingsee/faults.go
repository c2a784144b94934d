package thingsee

import "github.com/iotransit/iotransit/internal/fault"

// rejections holds the fault definition of every rejection code, so that
// docs/errors.md lists the codes a gateway reads in its error report and
// MQTT 5 PUBACK reason strings, and a tenant in its rejected messages. A
// Rejection's Reason is the sentence about one message; the definition's
// message is the code's public meaning.
var rejections = byCode(
	fault.Define(CodePayloadInvalid, fault.InvalidArgument,
		"the payload is not valid UTF-8 JSON (or starts with a byte order mark), has data after its value, or is an empty array"),
	fault.Define(CodeNotObject, fault.InvalidArgument,
		"the payload, or an element of its array, is not a JSON object"),
	fault.Define(CodeTooLarge, fault.TooLarge,
		"a message object is larger than the largest Thingsee message accepted"),
	fault.Define(CodeTooMany, fault.TooLarge,
		"the payload array holds more Thingsee messages than one upload may carry"),
	fault.Define(CodeDuplicateKey, fault.InvalidArgument,
		"a message object repeats a key (at its top level, also in another letter case)"),
	fault.Define(CodeFieldMissing, fault.InvalidArgument,
		"a required header field or property of the message is missing"),
	fault.Define(CodeFieldType, fault.InvalidArgument,
		"a field of the message has the wrong JSON type"),
	fault.Define(CodeFieldRange, fault.InvalidArgument,
		"a field of the message is outside its allowed range, length or set of values"),
	fault.Define(CodeFieldUnknown, fault.InvalidArgument,
		"a property is not in the schema of the message's tsmId, or a key imitates a header field in another letter case"),
	fault.Define(CodeTuidFormat, fault.InvalidArgument,
		"a TUID (tsmTuid, or a heartbeat's tuid) is not a 17-character Thingsee TUID"),
	fault.Define(CodeGatewayMismatch, fault.PermissionDenied,
		"tsmGw names a gateway other than the one that uploaded the message"),
	fault.Define(CodeTsFuture, fault.InvalidArgument,
		"tsmTs is further ahead of the cloud clock than allowed"),
	fault.Define(CodeTsInvalid, fault.InvalidArgument,
		"tsmTs is not finite or lies before 2000-01-01 (the device clock was not set)"),
	fault.Define(CodeDownlinkField, fault.InvalidArgument,
		"the message carries tsmDstTuid, a downlink field that is never valid in an uplink"),
	fault.Define(CodeCloudField, fault.InvalidArgument,
		"the message carries tsmCloudTs, which only the cloud sets"),
	fault.Define(CodeUnknownID, fault.InvalidArgument,
		"the tsmId has no schema and the tenant accepts only tsmIds with one"),
	fault.Define(CodeTooDeep, fault.TooLarge,
		"objects and arrays in the message (or the payload) are nested deeper than the limit"),
	fault.Define(CodeTooManyKeys, fault.TooLarge,
		"an object of the message holds more keys than the limit per object, or the message more than the limit per message"),
	fault.Define(CodeArrayTooLong, fault.TooLarge,
		"an array in the message holds more elements than the limit"),
	fault.Define(CodeKeyTooLong, fault.TooLarge,
		"a key in the message is longer than the limit"),
	fault.Define(CodeKeyInvalid, fault.InvalidArgument,
		"a key in the message holds a control character (NUL included), a format character, a line or paragraph separator, or an unpaired UTF-16 surrogate"),
	fault.Define(CodeStringTooLong, fault.TooLarge,
		"a string in the message is longer than the limit"),
	fault.Define(CodeStringInvalid, fault.InvalidArgument,
		"a string in the message holds a NUL character or an unpaired UTF-16 surrogate, so it is not valid Unicode text"),
	fault.Define(CodeNumberTooLong, fault.TooLarge,
		"a number in the message is written with more characters than the limit"),
)

func byCode(defs ...*fault.Definition) map[string]*fault.Definition {
	m := make(map[string]*fault.Definition, len(defs))
	for _, d := range defs {
		m[d.Code()] = d
	}
	return m
}

// Fault returns the fault definition of a rejection code (one of the Code*
// constants), and whether there is one.
func Fault(code string) (*fault.Definition, bool) {
	d, ok := rejections[code]
	return d, ok
}
