package thingsee

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Header fields, in the order they are checked.
const (
	hDstTuid       = iota // tsmDstTuid: downlink only, refused first
	hCloudTs              // tsmCloudTs: set by the cloud, refused
	hID                   // tsmId
	hEv                   // tsmEv
	hTuid                 // tsmTuid
	hGw                   // tsmGw
	hTs                   // tsmTs
	hGwTs                 // tsmGwTs
	hAp                   // tsmAp
	hTransactionID        // transactionId
	hDeploymentGroup
	nHeader
)

var headerNames = [nHeader]string{
	hDstTuid:         "tsmDstTuid",
	hCloudTs:         "tsmCloudTs",
	hID:              "tsmId",
	hEv:              "tsmEv",
	hTuid:            "tsmTuid",
	hGw:              "tsmGw",
	hTs:              "tsmTs",
	hGwTs:            "tsmGwTs",
	hAp:              "tsmAp",
	hTransactionID:   "transactionId",
	hDeploymentGroup: "deploymentGroupId",
}

// headerOf returns the index of the header field named key, or -1.
func headerOf(key string) int {
	if key == "" || (key[0] != 't' && key[0] != 'd') {
		return -1
	}
	for i, n := range headerNames {
		if n == key {
			return i
		}
	}
	return -1
}

const (
	// minTs is 2000-01-01T00:00:00Z: an earlier tsmTs means the device clock
	// was never set.
	minTs = 946684800
	// evThreshold is tsmEv 9: the message holds only the changed property.
	evThreshold = 9
	// evDisconnected is tsmEv 18: tsmTs may be absent.
	evDisconnected = 18
	// maxAp bounds tsmAp.
	maxAp = 64
	// maxDeploymentGroup bounds deploymentGroupId: 6 fixed characters plus
	// a customer part of at most 32.
	maxDeploymentGroup = 38
	// maxEchoTuid is the longest malformed tsmTuid copied into a Rejection.
	maxEchoTuid = 32
)

// Validate checks a gateway upload. gateway is the authenticated uploader's
// serial; a message's tsmGw, when present, must equal it. payload is not
// retained: accepted and rejected messages hold copies of their bytes.
func (v *Validator) Validate(payload []byte, gateway string) Result {
	return v.validate(nil, payload, gateway, true)
}

// ValidateAppend is Validate with the accepted messages appended to
// dst[:0] (their Accepted then shares dst's array), for a caller that
// reuses one slice for many uploads.
func (v *Validator) ValidateAppend(dst []Message, payload []byte, gateway string) Result {
	return v.validate(dst[:0], payload, gateway, true)
}

// validate is Validate. With oneWalk a payload of one object, or an array
// of objects, is validated in one walk when that walk proves it JSON
// (validateWellFormed, validateWellFormedArray); without, json.Valid judges
// every payload first. Both give the same Result (the
// fuzz target compares them).
// dst, when not nil, is where Accepted goes (appended to).
func (v *Validator) validate(dst []Message, payload []byte, gateway string, oneWalk bool) Result {
	if len(bytes.TrimLeft(payload, " \t\r\n")) == 0 {
		return v.refuse(payload, CodePayloadInvalid, "payload is empty; it must be a JSON object or an array of objects")
	}
	if bytes.HasPrefix(payload, byteOrderMark) {
		return v.refuse(payload, CodePayloadInvalid,
			"the payload starts with a UTF-8 byte order mark; send JSON without it (RFC 8259 §8.1)")
	}
	if !utf8.Valid(payload) {
		return v.refuse(payload, CodePayloadInvalid, fmt.Sprintf(
			"the payload is not valid UTF-8 (at byte %d), so it is not JSON (RFC 8259 §8.1)", invalidUTF8At(payload)+1))
	}
	start := skipSpace(payload, 0)
	if oneWalk {
		var res Result
		var ok bool
		switch payload[start] {
		case '{':
			res, ok = v.validateWellFormed(dst, payload[start:], gateway)
		case '[':
			res, ok = v.validateWellFormedArray(dst, payload[start:], gateway)
		}
		if ok {
			return res
		}
	}
	if !json.Valid(payload) {
		code, reason := v.syntaxReason(payload)
		return v.refuse(payload, code, reason)
	}
	end := valueEnd(payload, start)
	switch payload[start] {
	case '{':
		raw := bytes.Clone(payload[start:end])
		res := Result{Accepted: dst}
		v.validateElement(&res, raw, 0, 1, gateway, v.now())
		return res
	case '[':
		var sb [16]span // the spans of a usual upload stay on the stack
		spans := splitArray(payload, start, v.maxMessages, sb[:0])
		if len(spans) == 0 {
			return v.refuse(payload, CodePayloadInvalid, "payload is an empty JSON array; it must hold at least one message object")
		}
		if len(spans) > v.maxMessages {
			return v.refuse(payload, CodeTooMany, fmt.Sprintf("payload holds more than %d messages, the limit for one upload", v.maxMessages))
		}
		// One copy of the array serves every element; each element's slice
		// has its capacity capped so appending to it cannot clobber the next.
		buf := bytes.Clone(payload[start:end])
		now := v.now()
		res := Result{Accepted: dst}
		for i, sp := range spans {
			s, e := sp.start-start, sp.end-start
			v.validateElement(&res, buf[s:e:e], i, len(spans)-i, gateway, now)
		}
		return res
	default:
		return v.refuse(payload, CodeNotObject,
			"payload is "+describeFirstByte(payload[start])+"; it must be a JSON object or an array of objects")
	}
}

// validateWellFormed validates a payload of one object (obj: from its '{'
// on; valid UTF-8) in one walk, without a json.Valid pass: the outcome is
// the one Validate would reach through json.Valid. It reports false, having
// decided nothing, unless the walk read the whole object without an error,
// which proves the payload JSON (the rest of obj being whitespace). Any
// other payload (too large, malformed, a limit broken, a repeated nested
// key) takes Validate's general path, which decides as it always did.
func (v *Validator) validateWellFormed(dst []Message, obj []byte, gateway string) (Result, bool) {
	end := len(obj)
	for end > 0 && isSpace(obj[end-1]) {
		end--
	}
	if end > v.maxMessageBytes {
		return Result{}, false
	}
	raw := bytes.Clone(obj[:end])
	// Messages rarely have more than 16 members: those stay on the stack.
	var buf [16]member
	members, n, err := walkObject(raw, &v.lim, buf[:0])
	if err != nil || n != len(raw) {
		return Result{}, false
	}
	res := Result{Accepted: dst}
	m, rej := v.checkObject(members, nil, gateway, v.now())
	v.addOutcome(&res, raw, 0, 1, m, rej)
	return res, true
}

// validateWellFormedArray is validateWellFormed for a payload that is an
// array (arr: from its '[' on): it decides only when the array holds 1 to
// maxMessages objects, each of at most maxMessageBytes, that the walk reads
// whole, separated as JSON separates them, and followed by whitespace only.
func (v *Validator) validateWellFormedArray(dst []Message, arr []byte, gateway string) (Result, bool) {
	end := len(arr)
	for end > 0 && isSpace(arr[end-1]) {
		end--
	}
	// One copy of the array serves every element, as in Validate.
	buf := bytes.Clone(arr[:end])
	now := v.now()
	res := Result{Accepted: dst}
	var mb [16]member // reused: an element's members are done with once checked
	i := skipSpace(buf, 1)
	for index := 0; ; index++ {
		if index == v.maxMessages || i >= len(buf) || buf[i] != '{' {
			return Result{}, false
		}
		members, n, err := walkObject(buf[i:], &v.lim, mb[:0])
		if err != nil || n > v.maxMessageBytes {
			return Result{}, false
		}
		raw := buf[i : i+n : i+n]
		m, rej := v.checkObject(members, nil, gateway, now)
		// Sizes Accepted by a guess at the elements left: no count was made.
		v.addOutcome(&res, raw, index, (len(buf)-i)/(n+1)+1, m, rej)
		i = skipSpace(buf, i+n)
		if i < len(buf) && buf[i] == ',' {
			i = skipSpace(buf, i+1)
			continue
		}
		if i == len(buf)-1 && buf[i] == ']' {
			return res, true
		}
		return Result{}, false
	}
}

// byteOrderMark is the UTF-8 byte order mark, which JSON text must not
// start with (RFC 8259 §8.1) and which encoding/json reports as 'ï'.
var byteOrderMark = []byte{0xEF, 0xBB, 0xBF}

// invalidUTF8At returns the index of the first byte of p that is not part
// of valid UTF-8 (len(p) when there is none).
func invalidUTF8At(p []byte) int {
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(p)
}

// syntaxReason says why payload (valid UTF-8, not empty, without a byte
// order mark) is not JSON, in our own sentence: where it breaks (bytes
// counted from 1) and what is there. encoding/json's error text is never
// shown: it speaks of its scanner's states and shows bytes as Latin-1. A
// payload nested deeper than the depth limit where it breaks (encoding/json
// gives up at 10,000 levels) is refused as too deep.
func (v *Validator) syntaxReason(payload []byte) (code, reason string) {
	// at is the index of the first byte that cannot be JSON; len(payload)
	// when the payload ends before its value does.
	at, after := len(payload), false
	dec := json.NewDecoder(bytes.NewReader(payload))
	var raw json.RawMessage
	var se *json.SyntaxError
	switch err := dec.Decode(&raw); {
	case err == nil: // a complete value, then more than whitespace
		at, after = skipSpace(payload, int(dec.InputOffset())), true
	case errors.As(err, &se) && se.Offset > 0 && se.Offset <= int64(len(payload)):
		at = int(se.Offset) - 1
	}
	depth := nestingDepth(payload[:at])
	if payload[skipSpace(payload, 0)] == '[' {
		depth-- // the elements of an array payload are the messages
	}
	if depth > v.lim.depth {
		return CodeTooDeep, fmt.Sprintf("the payload is nested deeper than the limit of %d levels", v.lim.depth)
	}
	if at >= len(payload) {
		return CodePayloadInvalid, "the payload is not JSON: it ends before its value is complete"
	}
	r, _ := utf8.DecodeRune(payload[at:])
	where := ""
	if after {
		where = ", after the end of its value"
	}
	hint := ""
	if unicode.Is(unicode.Cc, r) {
		hint = "; inside a string it must be escaped"
	}
	return CodePayloadInvalid, fmt.Sprintf("the payload is not JSON: unexpected %s at byte %d%s%s", describeRune(r), at+1, where, hint)
}

// describeRune names a character of the payload for a syntax reason.
func describeRune(r rune) string {
	switch {
	case unicode.Is(unicode.Cc, r):
		return fmt.Sprintf("control character U+%04X", r)
	case r == '\'':
		return `character "'"`
	case !unicode.IsPrint(r):
		return fmt.Sprintf("character U+%04X", r)
	case r < utf8.RuneSelf:
		return fmt.Sprintf("character '%c'", r)
	}
	return fmt.Sprintf("character '%c' (U+%04X)", r, r)
}

// refuse returns a Result that refuses the whole payload.
func (v *Validator) refuse(payload []byte, code, reason string) Result {
	return Result{Rejected: []Rejection{{
		Index:  -1,
		Code:   code,
		Reason: reason,
		Raw:    bytes.Clone(payload[:min(len(payload), v.maxMessageBytes)]),
	}}}
}

// validateElement validates one array element (or the single object) and
// appends the outcome to res. left is how many elements are left to
// validate, this one included: the first accepted message sizes
// res.Accepted for all of them at once.
func (v *Validator) validateElement(res *Result, raw []byte, index, left int, gateway string, now time.Time) {
	if raw[0] != '{' {
		res.Rejected = append(res.Rejected, Rejection{
			Index:  index,
			Code:   CodeNotObject,
			Reason: fmt.Sprintf("element %d is %s; every element must be a message object", index, describeFirstByte(raw[0])),
			Raw:    v.truncate(raw),
		})
		return
	}
	if len(raw) > v.maxMessageBytes {
		res.Rejected = append(res.Rejected, Rejection{
			Index:  index,
			Code:   CodeTooLarge,
			Reason: fmt.Sprintf("message is %d bytes, larger than the limit of %d bytes", len(raw), v.maxMessageBytes),
			Raw:    v.truncate(raw),
		})
		return
	}
	m, rej := v.validateObject(raw, gateway, now)
	v.addOutcome(res, raw, index, left, m, rej)
}

// addOutcome appends to res the outcome of validating the element raw at
// index: m when rej is nil. left is as for validateElement.
func (v *Validator) addOutcome(res *Result, raw []byte, index, left int, m Message, rej *Rejection) {
	if rej != nil {
		rej.Index = index
		rej.Raw = raw
		res.Rejected = append(res.Rejected, *rej)
		return
	}
	m.Index = index
	m.Raw = raw
	if len(res.Accepted) == 0 && cap(res.Accepted) < left { // the first: room for those left
		res.Accepted = make([]Message, 0, left)
	}
	res.Accepted = append(res.Accepted, m)
}

func (v *Validator) truncate(raw []byte) []byte {
	return raw[:min(len(raw), v.maxMessageBytes):min(len(raw), v.maxMessageBytes)]
}

// object is the header of one message object as walked: header fields by
// index (kind 0 when absent). The other members (properties) are kept
// apart, so that reading a header field for a reason does not make the
// compiler move them to the heap.
type object struct {
	header [nHeader]jval
}

// get returns header field h, or nil when the message does not carry it.
func (o *object) get(h int) *jval {
	if o.header[h].kind == 0 {
		return nil
	}
	return &o.header[h]
}

// validateObject checks one message object (known to be valid JSON starting
// with '{'). The first problem found is returned, in this order: structure
// (duplicate keys), header fields in headerNames order, then properties in
// sorted name order.
func (v *Validator) validateObject(raw []byte, gateway string, now time.Time) (Message, *Rejection) {
	// Messages rarely have more than 16 members: those stay on the stack.
	var buf [16]member
	members, _, err := walkObject(raw, &v.lim, buf[:0])
	return v.checkObject(members, err, gateway, now)
}

// checkObject is validateObject after the walk: members and err are what
// walkObject returned.
func (v *Validator) checkObject(members []member, err error, gateway string, now time.Time) (Message, *Rejection) {
	limit, _ := err.(*limitError)
	if err != nil && limit == nil {
		var de *dupKeyError
		if errors.As(err, &de) {
			return Message{}, &Rejection{Code: CodeDuplicateKey, Field: clip(de.top),
				Reason: fmt.Sprintf("%s: a nested object repeats the key %s", clip(de.top), quote(de.key))}
		}
		return Message{}, &Rejection{Code: CodePayloadInvalid, Reason: "message is not a well-formed JSON object: " + clip(err.Error())}
	}
	var o object
	for i := range members {
		if h := headerOf(members[i].key); h >= 0 && o.header[h].kind == 0 {
			o.header[h] = members[i].val
		}
	}
	rej := func(code, field, reason string) (Message, *Rejection) {
		return Message{}, &Rejection{Code: code, Field: field, Reason: reason, TsmID: o.reportID(), Tuid: o.reportTuid()}
	}
	if limit != nil {
		return rej(limit.code, limit.field, limit.reason)
	}
	if j, i := firstFoldDuplicate(members); j >= 0 {
		a, b := members[i].key, members[j].key
		field := b
		if headerOf(a) >= 0 {
			field = a
		}
		if a == b {
			return rej(CodeDuplicateKey, clip(b), fmt.Sprintf("the key %s appears more than once in the message", quote(b)))
		}
		return rej(CodeDuplicateKey, clip(field),
			fmt.Sprintf("the keys %s and %s differ only in letter case; case-insensitive decoders would merge them", quote(a), quote(b)))
	}
	// Keys are unique now: keep the non-header members, in place.
	props := members[:0]
	for _, mb := range members {
		if headerOf(mb.key) < 0 {
			props = append(props, mb)
		}
	}

	// Header.
	if o.get(hDstTuid) != nil {
		return rej(CodeDownlinkField, "tsmDstTuid", "tsmDstTuid is a downlink command field, never valid in an uplink")
	}
	if o.get(hCloudTs) != nil {
		return rej(CodeCloudField, "tsmCloudTs", "tsmCloudTs is set by the cloud when it receives a message, never by a gateway")
	}
	var m Message
	id, r := o.integer(hID, 0, math.MaxInt32, true)
	if r != nil {
		return rej(r.code, r.field, r.reason)
	}
	if profile, data := id/1000, id%1000; profile < 1 || profile > 999 || (data != 0 && data < 100) {
		return rej(CodeFieldRange, "tsmId", fmt.Sprintf(
			"tsmId: %d is not a message id: it must be profile id (1..999) times 1000 plus data id (100..999, or 0)", id))
	}
	m.TsmID = int(id)
	ev, r := o.integer(hEv, 0, 999, true)
	if r != nil {
		return rej(r.code, r.field, r.reason)
	}
	m.TsmEv = int(ev)

	tuid := o.get(hTuid)
	switch {
	case tuid == nil:
		return rej(CodeFieldMissing, "tsmTuid", "tsmTuid is missing; every uplink message names its sensor")
	case tuid.kind != jString:
		return rej(CodeFieldType, "tsmTuid", mismatch("tsmTuid", tuid, "a string"))
	case !ValidTUID(tuid.s):
		return rej(CodeTuidFormat, "tsmTuid", fmt.Sprintf(
			"tsmTuid: %s is not a TUID: it must be 17 characters, 4 uppercase letters, 2 digits, then 11 uppercase letters or digits", quote(tuid.s)))
	}
	m.Tuid = tuid.s

	if gw := o.get(hGw); gw != nil {
		switch {
		case gw.kind != jString:
			return rej(CodeFieldType, "tsmGw", mismatch("tsmGw", gw, "a string"))
		case gw.s != gateway:
			return rej(CodeGatewayMismatch, "tsmGw", fmt.Sprintf(
				"tsmGw: %s does not match the uploading gateway %s; omit tsmGw or set it to the uploader's serial", quote(gw.s), quote(gateway)))
		case gw.s == "":
			// Only reachable when gateway is "" (unauthenticated tests):
			// an empty tsmGw would make "absent" and "empty" ambiguous.
			return rej(CodeFieldRange, "tsmGw", "tsmGw is empty; omit it instead")
		}
		m.Gw = gw.s
	}

	if ts := o.get(hTs); ts != nil {
		if ts.kind != jNumber {
			return rej(CodeFieldType, "tsmTs", mismatch("tsmTs", ts, "a number of Unix seconds"))
		}
		f, ok := parseJSONFloat(ts.s)
		switch {
		case !ok:
			return rej(CodeTsInvalid, "tsmTs", "tsmTs: "+clip(ts.s)+" is not a finite number")
		case f < minTs:
			return rej(CodeTsInvalid, "tsmTs", "tsmTs: "+clip(ts.s)+
				" is before 2000-01-01 (946684800); the device clock is not set")
		}
		limit := now.Add(v.skew)
		if f > float64(limit.Unix())+float64(limit.Nanosecond())/1e9 {
			return rej(CodeTsFuture, "tsmTs", fmt.Sprintf("tsmTs: %s is more than %s ahead of the cloud clock (%d)",
				clip(ts.s), v.skew, now.Unix()))
		}
		m.TsmTs, m.HasTs, m.TsRaw = f, true, ts.s
	} else if m.TsmEv != evDisconnected {
		return rej(CodeFieldMissing, "tsmTs", "tsmTs is missing; it may be absent only when tsmEv is 18 (network disconnected)")
	}

	if gts := o.get(hGwTs); gts != nil {
		if gts.kind != jNumber {
			return rej(CodeFieldType, "tsmGwTs", mismatch("tsmGwTs", gts, "a number"))
		}
		if _, ok := parseJSONFloat(gts.s); !ok {
			return rej(CodeFieldRange, "tsmGwTs", "tsmGwTs: "+clip(gts.s)+" is not a finite number")
		}
	}
	if ap := o.get(hAp); ap != nil {
		if ap.kind != jString {
			return rej(CodeFieldType, "tsmAp", mismatch("tsmAp", ap, "a string"))
		}
		if len(ap.s) > maxAp {
			return rej(CodeFieldRange, "tsmAp", fmt.Sprintf("tsmAp is %d bytes long; at most %d are allowed", len(ap.s), maxAp))
		}
	}
	if _, r := o.integer(hTransactionID, 0, math.MaxInt32, false); r != nil {
		return rej(r.code, r.field, r.reason)
	}
	if dg := o.get(hDeploymentGroup); dg != nil {
		if dg.kind != jString {
			return rej(CodeFieldType, "deploymentGroupId", mismatch("deploymentGroupId", dg, "a string"))
		}
		if !validDeploymentGroup(dg.s) {
			return rej(CodeFieldRange, "deploymentGroupId", fmt.Sprintf(
				"deploymentGroupId: %s must be 1 to %d lowercase letters or digits", quote(dg.s), maxDeploymentGroup))
		}
		m.HasDeploymentGroup = true
	}
	for _, p := range props {
		if h := lookalikeHeader(p.key); h != "" {
			return rej(CodeFieldUnknown, clip(p.key), fmt.Sprintf(
				"%s is not a field: it differs from the header field %s only in letter case", quote(p.key), h))
		}
	}

	// Properties.
	sch := schemaTable[m.TsmID]
	if sch == nil {
		if v.rejectUnknown {
			return rej(CodeUnknownID, "tsmId", fmt.Sprintf("tsmId %d is not a known Thingsee message id, and this tenant accepts known ids only", m.TsmID))
		}
		return m, nil
	}
	slices.SortFunc(props, func(a, b member) int { return strings.Compare(a.key, b.key) })
	for i := range props {
		p := &props[i]
		sp, ok := sch.props[p.key]
		if !ok {
			if sch.extraNonNegative && counterName(p.key) {
				sp = nonNeg()
			} else {
				return rej(CodeFieldUnknown, clip(p.key), fmt.Sprintf("%s is not a property of tsmId %d (%s); allowed: %s",
					quote(p.key), m.TsmID, sch.what, strings.Join(sch.names, ", ")))
			}
		}
		if r := checkProp(clip(p.key), &p.val, sp, m.TsmID); r != nil {
			return rej(r.code, r.field, r.reason)
		}
	}
	if m.TsmEv == evThreshold {
		if len(props) == 0 {
			return rej(CodeFieldMissing, "", fmt.Sprintf(
				"tsmEv 9 (threshold exceeded) message for tsmId %d holds no property; it must hold the property that changed", m.TsmID))
		}
		return m, nil
	}
	for _, name := range sch.required {
		if !slices.ContainsFunc(props, func(p member) bool { return p.key == name }) {
			return rej(CodeFieldMissing, name, fmt.Sprintf("%s is missing; tsmId %d (%s) requires it", name, m.TsmID, sch.what))
		}
	}
	if sch.atLeastOne && len(props) == 0 {
		return rej(CodeFieldMissing, "", fmt.Sprintf("tsmId %d (%s) message holds no property; it needs at least one of %s",
			m.TsmID, sch.what, strings.Join(sch.names, ", ")))
	}
	return m, nil
}

// problem is a rejection before the message context is added.
type problem struct {
	code, field, reason string
}

// integer checks the header field h as an exact integer within [lo, hi].
func (o *object) integer(h int, lo, hi int64, required bool) (int64, *problem) {
	name := headerNames[h]
	val := o.get(h)
	if val == nil {
		if required {
			return 0, &problem{CodeFieldMissing, name, name + " is missing; it is a required header field"}
		}
		return 0, nil
	}
	n, p := checkInt(name, val, lo, hi, 0)
	return n, p
}

// forID names the message id for range reasons (" for tsmId 12100"); it
// is only formatted when a reason is built.
type forID int

// String returns " for tsmId N", or "" when the id is unknown.
func (id forID) String() string {
	if id == 0 {
		return ""
	}
	return " for tsmId " + strconv.Itoa(int(id))
}

// checkInt checks val as an exact integer within [lo, hi]. ctx names the
// message id in range reasons.
func checkInt(name string, val *jval, lo, hi int64, ctx forID) (int64, *problem) {
	if val.kind != jNumber {
		return 0, &problem{CodeFieldType, name, mismatch(name, val, "an integer")}
	}
	n, st := parseJSONInt(val.s)
	switch {
	case st == intNotIntegral:
		return 0, &problem{CodeFieldType, name, name + ": " + clip(val.s) + " is not an integer"}
	case st == intOverflow || n < lo || n > hi:
		return 0, &problem{CodeFieldRange, name, name + ": " + clip(val.s) + " is out of range " + intRange(lo, hi) + ctx.String()}
	}
	return n, nil
}

// mismatch is the reason for a value of the wrong JSON type.
func mismatch(name string, val *jval, want string) string {
	switch val.kind {
	case jString, jNumber, jBool:
		return name + ": " + val.show() + " is " + val.typeName() + ", not " + want
	}
	return name + " is " + val.typeName() + ", not " + want
}

// intRange renders an integer range for reasons.
func intRange(lo, hi int64) string {
	if hi == math.MaxInt64 {
		return "(must be >= " + strconv.FormatInt(lo, 10) + ")"
	}
	return strconv.FormatInt(lo, 10) + ".." + strconv.FormatInt(hi, 10)
}

// floatRange renders a number range for reasons.
func floatRange(lo, hi float64) string {
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	if math.IsInf(hi, 1) {
		return "(must be >= " + f(lo) + ")"
	}
	return f(lo) + ".." + f(hi)
}

// checkNumber checks val as a finite number within [lo, hi].
func checkNumber(name string, val *jval, lo, hi float64, ctx forID) *problem {
	if val.kind != jNumber {
		return &problem{CodeFieldType, name, mismatch(name, val, "a number")}
	}
	f, ok := parseJSONFloat(val.s)
	if !ok {
		return &problem{CodeFieldRange, name, name + ": " + clip(val.s) + " is not a finite number"}
	}
	if f < lo || f > hi {
		return &problem{CodeFieldRange, name, name + ": " + clip(val.s) + " is out of range " + floatRange(lo, hi) + ctx.String()}
	}
	return nil
}

// checkString checks val as a string of at most maxStringBytes bytes.
func checkString(name string, val *jval) *problem {
	if val.kind != jString {
		return &problem{CodeFieldType, name, mismatch(name, val, "a string")}
	}
	if len(val.s) > maxStringBytes {
		return &problem{CodeFieldRange, name, fmt.Sprintf("%s is %d bytes long; at most %d are allowed", name, len(val.s), maxStringBytes)}
	}
	return nil
}

// checkProp checks one property value against its schema.
func checkProp(field string, val *jval, sp prop, id int) *problem {
	ctx := forID(id)
	switch sp.kind {
	case kindInt:
		_, p := checkInt(field, val, sp.imin, sp.imax, ctx)
		return p
	case kindNumber:
		return checkNumber(field, val, sp.min, sp.max, ctx)
	case kindString:
		return checkString(field, val)
	case kindStringOrNumber:
		if val.kind == jNumber {
			if _, ok := parseJSONFloat(val.s); !ok {
				return &problem{CodeFieldRange, field, field + ": " + clip(val.s) + " is not a finite number"}
			}
			return nil
		}
		if val.kind != jString {
			return &problem{CodeFieldType, field, mismatch(field, val, "a string or a number")}
		}
		return checkString(field, val)
	case kindEnum:
		if val.kind != jString {
			return &problem{CodeFieldType, field, mismatch(field, val, "a string")}
		}
		if !slices.Contains(sp.enum, val.s) {
			return &problem{CodeFieldRange, field, fmt.Sprintf("%s: %s must be one of %s", field, quote(val.s), strings.Join(sp.enum, ", "))}
		}
		return nil
	case kindTUID:
		if val.kind != jString {
			return &problem{CodeFieldType, field, mismatch(field, val, "a string")}
		}
		if !ValidTUID(val.s) {
			return &problem{CodeTuidFormat, field, fmt.Sprintf("%s: %s is not a 17-character TUID", field, quote(val.s))}
		}
		return nil
	case kindDist4x4:
		return checkDist4x4(field, val, ctx)
	case kindHeartbeats:
		return checkHeartbeats(field, val)
	}
	return &problem{CodeFieldType, field, field + ": the schema has no rule for this property"}
}

// checkDist4x4 checks a 4 × 4 array of numbers >= 0 (tsmId 17201 dist).
func checkDist4x4(name string, val *jval, ctx forID) *problem {
	if val.kind != jArray || len(val.elems) != 4 {
		return &problem{CodeFieldType, name, name + ": must be a 4 x 4 array of distances in mm, not " + shapeOf(val)}
	}
	for i := range val.elems {
		row := &val.elems[i]
		if row.kind != jArray || len(row.elems) != 4 {
			return &problem{CodeFieldType, name, fmt.Sprintf("%s: row %d must be an array of 4 distances, not %s", name, i, shapeOf(row))}
		}
		for j := range row.elems {
			// Reasons are built relative to the cell and prefixed on
			// failure only, so a valid array costs no formatting.
			if p := checkNumber("", &row.elems[j], 0, math.Inf(1), ctx); p != nil {
				p.field = name
				p.reason = fmt.Sprintf("%s[%d][%d]%s", name, i, j, p.reason)
				return p
			}
		}
	}
	return nil
}

// shapeOf describes a value's type, and an array's length, for reasons.
func shapeOf(v *jval) string {
	if v.kind == jArray {
		return fmt.Sprintf("an array of %d", len(v.elems))
	}
	return v.typeName()
}

// checkHeartbeats checks the heartbeats array of tsmId 11200: at most
// maxHeartbeats objects, each exactly {tuid: TUID, slotBits: integer >= 0}.
func checkHeartbeats(name string, val *jval) *problem {
	if val.kind != jArray {
		return &problem{CodeFieldType, name, mismatch(name, val, "an array")}
	}
	if len(val.elems) > maxHeartbeats {
		return &problem{CodeFieldRange, name, fmt.Sprintf("%s holds %d entries; at most %d are allowed", name, len(val.elems), maxHeartbeats)}
	}
	for i := range val.elems {
		// Reasons are built relative to the entry and prefixed on failure
		// only, so a valid array of 1000 entries costs no formatting.
		if p := checkHeartbeat(&val.elems[i]); p != nil {
			p.field = name
			p.reason = fmt.Sprintf("%s[%d]%s", name, i, p.reason)
			return p
		}
	}
	return nil
}

// checkHeartbeat checks one heartbeats entry; reasons start with the path
// inside the entry (".tuid: ...") or ": ".
func checkHeartbeat(e *jval) *problem {
	if e.kind != jObject {
		return &problem{CodeFieldType, "", ": " + e.typeName() + " is not a {tuid, slotBits} object"}
	}
	var hasTuid, hasBits bool
	for j := range e.members {
		mb := &e.members[j]
		switch mb.key {
		case "tuid":
			hasTuid = true
			if p := checkProp(".tuid", &mb.val, prop{kind: kindTUID}, 11200); p != nil {
				return p
			}
		case "slotBits":
			hasBits = true
			if _, p := checkInt(".slotBits", &mb.val, 0, math.MaxInt64, 0); p != nil {
				return p
			}
		default:
			return &problem{CodeFieldUnknown, "", ": " + quote(mb.key) + " is not a heartbeat field; allowed: tuid, slotBits"}
		}
	}
	if !hasTuid || !hasBits {
		return &problem{CodeFieldMissing, "", ": a heartbeat needs both tuid and slotBits"}
	}
	return nil
}

// counterName reports whether key may name an extra 1220 counter: an ASCII
// letter, then up to 63 letters, digits or underscores.
func counterName(key string) bool {
	if key == "" || len(key) > 64 {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || (c < '0' || c > '9') && c != '_') {
			return false
		}
	}
	return true
}

// ValidTUID reports whether s is a Thingsee Thing Unique ID:
// ^[A-Z]{4}[0-9]{2}[A-Z0-9]{11}$ (gateway serials have the same form).
func ValidTUID(s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := range 17 {
		c := s[i]
		upper := c >= 'A' && c <= 'Z'
		digit := c >= '0' && c <= '9'
		switch {
		case i < 4 && !upper, i >= 4 && i < 6 && !digit, i >= 6 && !upper && !digit:
			return false
		}
	}
	return true
}

// validDeploymentGroup reports whether s is 1..38 characters of [a-z0-9].
// The cloud owns the strict {env}{country}{reserved}{customer} format, so a
// gateway-supplied value is only checked to be this safe alphabet (it ends up
// in MQTT topics).
func validDeploymentGroup(s string) bool {
	if len(s) == 0 || len(s) > maxDeploymentGroup {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// lookalikeHeader returns the header field name that key equals when letter
// case is ignored (key itself not being that header), or "". Such keys are
// refused because encoding/json and other case-insensitive decoders would
// read them as the header field downstream.
func lookalikeHeader(key string) string {
	if len(key) < 5 || len(key) > 3*len("deploymentGroupId") {
		return ""
	}
	for _, h := range headerNames {
		if strings.EqualFold(key, h) {
			return h
		}
	}
	return ""
}

// reportID returns the message's tsmId when it is a valid one, for
// rejections.
func (o *object) reportID() int {
	v := o.get(hID)
	if v == nil || v.kind != jNumber {
		return 0
	}
	n, st := parseJSONInt(v.s)
	if st != intOK {
		return 0
	}
	if profile, data := n/1000, n%1000; profile < 1 || profile > 999 || (data != 0 && data < 100) {
		return 0
	}
	return int(n)
}

// reportTuid returns the message's tsmTuid for rejections: a valid TUID, or a
// malformed one of at most maxEchoTuid bytes of [A-Za-z0-9._-]; "" otherwise.
func (o *object) reportTuid() string {
	v := o.get(hTuid)
	if v == nil || v.kind != jString || len(v.s) > maxEchoTuid {
		return ""
	}
	for i := 0; i < len(v.s); i++ {
		c := v.s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return ""
		}
	}
	return v.s
}
