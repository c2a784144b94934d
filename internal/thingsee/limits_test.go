package thingsee

import (
	"fmt"
	"strings"
	"testing"
)

// unknownID is a tsmId without a schema: only the header and the
// structural limits are checked in its messages.
const unknownID = 99100

// unknown returns a valid message of unknownID with the given members
// spliced in after its header.
func unknown(members string) string { return msg(unknownID, 10, members) }

// nestedArrays returns levels nested arrays ("[[]]" is 2).
func nestedArrays(levels int) string {
	return strings.Repeat("[", levels) + strings.Repeat("]", levels)
}

// keysObject returns an object of n keys "k0".."k{n-1}".
func keysObject(n int) string {
	return "{" + keyList(n, "k") + "}"
}

// keyList returns n members `"<prefix>i":i` joined by commas.
func keyList(n int, prefix string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"%s%d":%d`, prefix, i, i)
	}
	return strings.Join(parts, ",")
}

// headerKeys is the number of keys msg writes before the given members.
const headerKeys = 4

func TestThingseeUnknownIDHasNoSchema(t *testing.T) {
	if schemaTable[unknownID] != nil {
		t.Fatalf("tsmId %d has a schema; the structural tests need one without", unknownID)
	}
}

// TestThingseeStructuralLimitsAtTheBoundary checks each structural limit,
// at its default, in a message of a tsmId without a schema: accepted at
// the limit, rejected one past it with its code, its field and a reason
// that names the limit.
func TestThingseeStructuralLimitsAtTheBoundary(t *testing.T) {
	big := Options{MaxMessageBytes: 1 << 20}
	// Objects of 256 keys, holding 4096 keys with the message's own.
	manyObjects := func(total int) string {
		var objs []string
		for n := total - headerKeys - 1; n > 0; n -= DefaultMaxObjectKeys {
			objs = append(objs, keysObject(min(n, DefaultMaxObjectKeys)))
		}
		return `"x":[` + strings.Join(objs, ",") + `]`
	}
	tests := []struct {
		name     string
		opts     Options
		atLimit  string // accepted
		pastIt   string // rejected
		code     string
		field    string
		reason   string // the exact reason of the rejection
		limitNum int
	}{
		{name: "depth of arrays", atLimit: unknown(`"x":` + nestedArrays(DefaultMaxDepth-1)), pastIt: unknown(`"x":` + nestedArrays(DefaultMaxDepth)),
			code: CodeTooDeep, field: "x", reason: "x: nesting is deeper than the limit of 32 levels"},
		{name: "depth of objects", atLimit: unknown(`"x":` + strings.Repeat(`{"a":`, DefaultMaxDepth-2) + `{}` + strings.Repeat("}", DefaultMaxDepth-2)),
			pastIt: unknown(`"x":` + strings.Repeat(`{"a":`, DefaultMaxDepth-1) + `{}` + strings.Repeat("}", DefaultMaxDepth-1)),
			code:   CodeTooDeep, field: "x", reason: "x: nesting is deeper than the limit of 32 levels"},
		{name: "keys of the message object", atLimit: unknown(keyList(DefaultMaxObjectKeys-headerKeys, "p")), pastIt: unknown(keyList(DefaultMaxObjectKeys-headerKeys+1, "p")),
			code: CodeTooManyKeys, reason: "the message holds more than 256 keys, the limit per object"},
		{name: "keys of a nested object", atLimit: unknown(`"x":` + keysObject(DefaultMaxObjectKeys)), pastIt: unknown(`"x":` + keysObject(DefaultMaxObjectKeys+1)),
			code: CodeTooManyKeys, field: "x", reason: "x: an object holds more than 256 keys, the limit per object"},
		{name: "keys in all", opts: big, atLimit: unknown(manyObjects(DefaultMaxKeys)), pastIt: unknown(manyObjects(DefaultMaxKeys + 1)),
			code: CodeTooManyKeys, reason: "the message holds more than 4096 keys in all its objects, the limit per message"},
		{name: "array elements", atLimit: unknown(`"x":[` + strings.Repeat("0,", DefaultMaxArrayElements-1) + `0]`),
			pastIt: unknown(`"x":[` + strings.Repeat("0,", DefaultMaxArrayElements) + `0]`),
			code:   CodeArrayTooLong, field: "x", reason: "x: an array holds more than 1024 elements, the limit per array"},
		{name: "key bytes", atLimit: unknown(`"` + strings.Repeat("k", DefaultMaxKeyBytes) + `":1`), pastIt: unknown(`"` + strings.Repeat("k", DefaultMaxKeyBytes+1) + `":1`),
			code: CodeKeyTooLong, field: strings.Repeat("k", 64) + "...",
			reason: `the key "` + strings.Repeat("k", 64) + `..." is 129 bytes long; the limit is 128 bytes`},
		{name: "key bytes of 2-byte characters", atLimit: unknown(`"x":{"` + strings.Repeat("é", DefaultMaxKeyBytes/2) + `":1}`),
			pastIt: unknown(`"x":{"` + strings.Repeat("é", DefaultMaxKeyBytes/2) + `k":1}`),
			code:   CodeKeyTooLong, field: "x", reason: `x: the key "` + strings.Repeat("é", 32) + `..." is 129 bytes long; the limit is 128 bytes`},
		{name: "key bytes counted unescaped", atLimit: unknown(`"` + strings.Repeat(`\u0041`, DefaultMaxKeyBytes) + `":1`),
			pastIt: unknown(`"` + strings.Repeat(`\u0041`, DefaultMaxKeyBytes+1) + `":1`),
			code:   CodeKeyTooLong, field: strings.Repeat("A", 64) + "...", reason: `the key "` + strings.Repeat("A", 64) + `..." is 129 bytes long; the limit is 128 bytes`},
		{name: "string bytes", atLimit: unknown(`"x":"` + strings.Repeat("s", DefaultMaxStringBytes) + `"`),
			pastIt: unknown(`"x":"` + strings.Repeat("s", DefaultMaxStringBytes+1) + `"`),
			code:   CodeStringTooLong, field: "x", reason: "x: a string is 4097 bytes long; the limit is 4096 bytes"},
		{name: "string bytes counted unescaped", atLimit: unknown(`"x":["` + strings.Repeat(`\u00e9`, DefaultMaxStringBytes/2) + `"]`),
			pastIt: unknown(`"x":["` + strings.Repeat(`\u00e9`, DefaultMaxStringBytes/2) + `s"]`),
			code:   CodeStringTooLong, field: "x", reason: "x: a string is 4097 bytes long; the limit is 4096 bytes"},
		{name: "number characters", atLimit: unknown(`"x":` + strings.Repeat("9", DefaultMaxNumberBytes)), pastIt: unknown(`"x":-` + strings.Repeat("9", DefaultMaxNumberBytes)),
			code: CodeNumberTooLong, field: "x", reason: "x: a number is 65 characters long; the limit is 64"},
		{name: "number characters of a fraction", atLimit: unknown(`"x":[0.` + strings.Repeat("1", DefaultMaxNumberBytes-6) + `e-10]`),
			pastIt: unknown(`"x":[0.` + strings.Repeat("1", DefaultMaxNumberBytes-5) + `e-10]`),
			code:   CodeNumberTooLong, field: "x", reason: "x: a number is 65 characters long; the limit is 64"},

		// Configured limits.
		{name: "configured depth", opts: Options{MaxDepth: 3}, atLimit: unknown(`"x":[[1]]`), pastIt: unknown(`"x":[[[1]]]`),
			code: CodeTooDeep, field: "x", reason: "x: nesting is deeper than the limit of 3 levels"},
		{name: "depth 1 refuses every container", opts: Options{MaxDepth: 1}, atLimit: unknown(`"x":1`), pastIt: unknown(`"x":{}`),
			code: CodeTooDeep, field: "x", reason: "x: nesting is deeper than the limit of 1 levels"},
		{name: "configured keys per object", opts: Options{MaxObjectKeys: 6}, atLimit: unknown(`"x":` + keysObject(6)), pastIt: unknown(`"x":` + keysObject(7)),
			code: CodeTooManyKeys, field: "x", reason: "x: an object holds more than 6 keys, the limit per object"},
		{name: "configured keys in all", opts: Options{MaxKeys: 8}, atLimit: unknown(`"x":{"a":1},"y":{"b":1}`), pastIt: unknown(`"x":{"a":1},"y":{"b":1,"c":1}`),
			code: CodeTooManyKeys, reason: "the message holds more than 8 keys in all its objects, the limit per message"},
		{name: "configured array elements", opts: Options{MaxArrayElements: 2}, atLimit: unknown(`"x":[[1,2]]`), pastIt: unknown(`"x":[[1,2,3]]`),
			code: CodeArrayTooLong, field: "x", reason: "x: an array holds more than 2 elements, the limit per array"},
		{name: "configured key bytes", opts: Options{MaxKeyBytes: 7}, atLimit: unknown(`"abcdefg":1`), pastIt: unknown(`"abcdefgh":1`),
			code: CodeKeyTooLong, field: "abcdefgh", reason: `the key "abcdefgh" is 8 bytes long; the limit is 7 bytes`},
		{name: "configured string bytes", opts: Options{MaxStringBytes: 20}, atLimit: unknown(`"x":"` + strings.Repeat("s", 20) + `"`), pastIt: unknown(`"x":"` + strings.Repeat("s", 21) + `"`),
			code: CodeStringTooLong, field: "x", reason: "x: a string is 21 bytes long; the limit is 20 bytes"},
		{name: "configured number characters", opts: Options{MaxNumberBytes: 10}, atLimit: unknown(`"x":1764273000`), pastIt: unknown(`"x":1764273000.5`),
			code: CodeNumberTooLong, field: "x", reason: "x: a number is 12 characters long; the limit is 10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := testValidator(tc.opts)
			if res := v.Validate([]byte(tc.atLimit), testGateway); len(res.Accepted) != 1 {
				t.Fatalf("at the limit: want accepted, got %+v", res.Rejected)
			}
			res := v.Validate([]byte(tc.pastIt), testGateway)
			if len(res.Rejected) != 1 {
				t.Fatalf("one past the limit: want rejected, got accepted")
			}
			r := res.Rejected[0]
			checkRejection(t, &r)
			if r.Code != tc.code || r.Field != tc.field || r.Reason != tc.reason {
				t.Errorf("got %s on %q: %q\nwant %s on %q: %q", r.Code, r.Field, r.Reason, tc.code, tc.field, tc.reason)
			}
			if r.Index != 0 || r.TsmID != unknownID || r.Tuid != testTuid {
				t.Errorf("rejection names index %d, tsmId %d, tuid %q; want 0, %d, %s", r.Index, r.TsmID, r.Tuid, unknownID, testTuid)
			}
		})
	}
}

// TestThingseeStructuralLimitsHoldForKnownIDs: the limits are checked
// before the schema, whatever the tsmId.
func TestThingseeStructuralLimitsHoldForKnownIDs(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		payload string
		code    string
	}{
		{name: "deep unknown property of 12100", payload: weather(`"x":` + nestedArrays(40)), code: CodeTooDeep},
		{name: "NUL key in 12100", payload: weather(`"a\u0000b":1`), code: CodeKeyInvalid},
		{name: "lone surrogate in a heartbeats tuid", payload: msg(11200, 10, `"heartbeats":[{"tuid":"\ud800","slotBits":1}]`), code: CodeStringInvalid},
		{name: "1000 heartbeats over a small array limit", opts: Options{MaxArrayElements: 999, MaxMessageBytes: 1 << 20}, payload: msg(11200, 10, heartbeats(1000)), code: CodeArrayTooLong},
		{name: "long string of 1100", payload: msg(1100, 10, `"psn":"`+strings.Repeat("p", 5000)+`"`), code: CodeStringTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testValidator(tc.opts).Validate([]byte(tc.payload), testGateway)
			if len(res.Rejected) != 1 || res.Rejected[0].Code != tc.code {
				t.Fatalf("want %s, got %+v", tc.code, res)
			}
			checkRejection(t, &res.Rejected[0])
		})
	}
	// 1000 heartbeats, the schema's own limit, pass the default limits.
	if res := testValidator(Options{MaxMessageBytes: 1 << 20}).Validate([]byte(msg(11200, 10, heartbeats(1000))), testGateway); len(res.Accepted) != 1 {
		t.Errorf("1000 heartbeats: %+v", res.Rejected)
	}
}

// TestThingseeHostileText covers the characters keys and strings must not
// hold, and what they may.
func TestThingseeHostileText(t *testing.T) {
	tests := []struct {
		name    string
		members string
		code    string // "" when accepted
		field   string
		reason  string // the exact reason
	}{
		// Keys.
		{name: "lone high surrogate key", members: `"\ud800":1`, code: CodeKeyInvalid, field: "?",
			reason: `the key "?" holds an unpaired UTF-16 surrogate \ud800, which is not a character; keys must be valid Unicode`},
		{name: "lone low surrogate key", members: `"a\uDC00":1`, code: CodeKeyInvalid, field: "a?",
			reason: `the key "a?" holds an unpaired UTF-16 surrogate \udc00, which is not a character; keys must be valid Unicode`},
		{name: "high surrogate then a letter", members: `"\ud83dx":1`, code: CodeKeyInvalid, field: "?x"},
		{name: "high surrogate then another high", members: `"\ud83d\ud83d\ude00":1`, code: CodeKeyInvalid},
		{name: "high surrogate at the end", members: `"x\ud83d":1`, code: CodeKeyInvalid},
		{name: "reversed pair", members: `"\ude00\ud83d":1`, code: CodeKeyInvalid},
		{name: "NUL in a key", members: `"a\u0000b":1`, code: CodeKeyInvalid, field: "a?b",
			reason: `the key "a?b" holds the control character U+0000; keys must not hold control or format characters`},
		{name: "newline in a nested key", members: `"x":{"a\nb":1}`, code: CodeKeyInvalid, field: "x",
			reason: `x: the key "a?b" holds the control character U+000A; keys must not hold control or format characters`},
		{name: "raw DEL in a key", members: "\"a\x7fb\":1", code: CodeKeyInvalid, reason: `the key "a?b" holds the control character U+007F; keys must not hold control or format characters`},
		{name: "C1 control in a key", members: `"a` + "\u0085" + `b":1`, code: CodeKeyInvalid},
		{name: "right-to-left override in a key", members: `"a` + "\u202e" + `b":1`, code: CodeKeyInvalid,
			reason: `the key "a?b" holds the format character U+202E; keys must not hold control or format characters`},
		{name: "zero-width space in a key", members: `"a\u200bb":1`, code: CodeKeyInvalid},
		{name: "byte order mark in a key", members: `"\ufeffa":1`, code: CodeKeyInvalid},
		{name: "line separator in a key", members: `"a\u2028b":1`, code: CodeKeyInvalid,
			reason: `the key "a?b" holds the separator U+2028; keys must not hold control or format characters`},
		{name: "key in a heartbeat-like nested array", members: `"x":[{"ok":1},{"\u0001":1}]`, code: CodeKeyInvalid, field: "x"},
		{name: "surrogate pair key", members: `"\ud83d\ude00":1`},
		{name: "raw emoji key", members: `"😀":1`},
		{name: "accented and CJK keys", members: `"é":1,"日本":2`},
		{name: "quote, backslash and space in a key", members: `"a \"b\\ c":1`},
		{name: "escaped backslash before u0000 text", members: `"a\\u0000":1,"x":"\\ud800"`},
		{name: "empty key", members: `"":1`},
		{name: "U+FFFD written out", members: `"\ufffd":"` + "\ufffd" + `"`},

		// String values.
		{name: "lone surrogate string", members: `"x":"\udc00"`, code: CodeStringInvalid, field: "x",
			reason: `x: a string holds an unpaired UTF-16 surrogate \udc00, which is not a character; strings must be valid Unicode`},
		{name: "lone surrogate deep in a value", members: `"x":{"y":["ok","a\ud800b"]}`, code: CodeStringInvalid, field: "x"},
		{name: "NUL in a string", members: `"x":"a\u0000b"`, code: CodeStringInvalid, field: "x",
			reason: `x: a string holds a NUL character (\u0000), which many receivers cannot store`},
		{name: "surrogate pair string", members: `"x":"\ud83d\ude00"`},
		{name: "control characters other than NUL in a string", members: `"x":"a\tb\nc\u001bd"`},
		{name: "format characters in a string", members: `"x":"a\u202eb"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testValidator(Options{}).Validate([]byte(unknown(tc.members)), testGateway)
			if tc.code == "" {
				if len(res.Accepted) != 1 {
					t.Fatalf("want accepted, got %+v", res.Rejected)
				}
				return
			}
			if len(res.Rejected) != 1 {
				t.Fatalf("want %s, got accepted", tc.code)
			}
			r := res.Rejected[0]
			checkRejection(t, &r)
			if r.Code != tc.code || (tc.field != "" && r.Field != tc.field) || (tc.reason != "" && r.Reason != tc.reason) {
				t.Errorf("got %s on %q: %q\nwant %s on %q: %q", r.Code, r.Field, r.Reason, tc.code, tc.field, tc.reason)
			}
			if r.TsmID != unknownID || r.Tuid != testTuid {
				t.Errorf("rejection names tsmId %d, tuid %q", r.TsmID, r.Tuid)
			}
		})
	}
}

// TestThingseeHostileShapes replays the shapes of issue 8 finding 6: each
// is refused, without deep recursion and in linear time (the test would
// time out or overflow the stack otherwise).
func TestThingseeHostileShapes(t *testing.T) {
	huge := Options{MaxMessageBytes: 1 << 24}
	tests := []struct {
		name    string
		opts    Options
		payload string
		index   int
		code    string
		reason  string // a substring of the reason
	}{
		{name: "5000 deep in a message", payload: unknown(`"x":` + nestedArrays(5000)), code: CodeTooDeep, reason: "limit of 32 levels"},
		{name: "9999 deep with the depth limit set beyond its cap", opts: Options{MaxDepth: 1 << 30, MaxMessageBytes: 1 << 24},
			payload: unknown(`"x":` + nestedArrays(9990)), code: CodeTooDeep, reason: "limit of 1000 levels"},
		{name: "1000000 deep payload", opts: huge, payload: nestedArrays(1000000), index: -1, code: CodeTooDeep,
			reason: "the payload is nested deeper than the limit of 32 levels"},
		{name: "1000000 deep object payload", opts: huge, payload: strings.Repeat(`{"a":`, 1000000) + "1" + strings.Repeat("}", 1000000), index: -1, code: CodeTooDeep},
		{name: "1000000 deep and truncated", opts: huge, payload: strings.Repeat("[", 1000000), index: -1, code: CodeTooDeep},
		{name: "deep, then a syntax error", opts: huge, payload: `{"x":` + nestedArrays(40) + `,}`, index: -1, code: CodeTooDeep},
		{name: "shallow, then a syntax error", payload: `{"x":` + nestedArrays(30) + `,}`, index: -1, code: CodePayloadInvalid},
		{name: "many deep siblings", payload: unknown(`"x":[` + strings.Repeat(nestedArrays(40)+",", 100) + `0]`), code: CodeTooDeep},
		{name: "100000 properties", opts: huge, payload: unknown(keyList(100000, "p")), code: CodeTooManyKeys, reason: "limit per object"},
		{name: "100000 keys in small objects", opts: huge, payload: unknown(`"x":[` + strings.Repeat(keysObject(200)+",", 500) + `{}]`), code: CodeTooManyKeys, reason: "limit per message"},
		{name: "1000000 elements", opts: huge, payload: unknown(`"x":[` + strings.Repeat("0,", 1000000) + `0]`), code: CodeArrayTooLong},
		{name: "1 MB key", opts: huge, payload: unknown(`"` + strings.Repeat("k", 1<<20) + `":1`), code: CodeKeyTooLong},
		{name: "1 MB string", opts: huge, payload: unknown(`"x":"` + strings.Repeat("s", 1<<20) + `"`), code: CodeStringTooLong},
		{name: "1 MB number", opts: huge, payload: unknown(`"x":` + strings.Repeat("1", 1<<20)), code: CodeNumberTooLong},
		{name: "hostile element among valid ones", payload: "[" + weather("") + "," + unknown(`"\ud800":1`) + "," + weather("") + "]", index: 1, code: CodeKeyInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testValidator(tc.opts).Validate([]byte(tc.payload), testGateway)
			var r *Rejection
			for i := range res.Rejected {
				checkRejection(t, &res.Rejected[i])
				if res.Rejected[i].Index == tc.index {
					r = &res.Rejected[i]
				}
			}
			if r == nil || len(res.Rejected) != 1 {
				t.Fatalf("want one rejection at index %d, got %d: %+v", tc.index, len(res.Rejected), res.Rejected)
			}
			if r.Code != tc.code || !strings.Contains(r.Reason, tc.reason) {
				t.Errorf("got %s %q, want %s with %q", r.Code, r.Reason, tc.code, tc.reason)
			}
		})
	}
}

// TestThingseeSyntaxReasons: a payload that is not JSON is refused in our
// own words (issue 8 finding 7), never with encoding/json's error text.
func TestThingseeSyntaxReasons(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		reason  string
	}{
		{name: "byte order mark", payload: "\xef\xbb\xbf" + weather(""),
			reason: "the payload starts with a UTF-8 byte order mark; send JSON without it (RFC 8259 §8.1)"},
		{name: "byte order mark alone", payload: "\xef\xbb\xbf",
			reason: "the payload starts with a UTF-8 byte order mark; send JSON without it (RFC 8259 §8.1)"},
		{name: "byte order mark after a space", payload: " \xef\xbb\xbf{}",
			reason: "the payload is not JSON: unexpected character U+FEFF at byte 2"},
		{name: "bad value", payload: `{"tsmId":x}`, reason: "the payload is not JSON: unexpected character 'x' at byte 10"},
		{name: "not JSON at all", payload: `temp=21`, reason: "the payload is not JSON: unexpected character 'e' at byte 2"},
		{name: "single quotes", payload: `{'a':1}`, reason: `the payload is not JSON: unexpected character "'" at byte 2`},
		{name: "trailing comma", payload: `{"a":1,}`, reason: "the payload is not JSON: unexpected character '}' at byte 8"},
		{name: "data after the value", payload: `{"a":1}  x`, reason: "the payload is not JSON: unexpected character 'x' at byte 10, after the end of its value"},
		{name: "two objects", payload: weather("") + weather(""), reason: fmt.Sprintf("the payload is not JSON: unexpected character '{' at byte %d, after the end of its value", len(weather(""))+1)},
		{name: "truncated", payload: `{"tsmId":`, reason: "the payload is not JSON: it ends before its value is complete"},
		{name: "truncated array", payload: `[{"a":1}, `, reason: "the payload is not JSON: it ends before its value is complete"},
		{name: "raw control character in a string", payload: "{\"a\":\"b\x01\"}",
			reason: "the payload is not JSON: unexpected control character U+0001 at byte 8; inside a string it must be escaped"},
		{name: "raw newline in a string", payload: "{\"a\":\"b\nc\"}",
			reason: "the payload is not JSON: unexpected control character U+000A at byte 8; inside a string it must be escaped"},
		{name: "non-ASCII character", payload: `{"a":é}`, reason: "the payload is not JSON: unexpected character 'é' (U+00E9) at byte 6"},
		{name: "invalid UTF-8", payload: `{"a":"` + "\xff" + `"}`, reason: "the payload is not valid UTF-8 (at byte 7), so it is not JSON (RFC 8259 §8.1)"},
		{name: "bad escape", payload: `{"a":"\x"}`, reason: "the payload is not JSON: unexpected character 'x' at byte 8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testValidator(Options{}).Validate([]byte(tc.payload), testGateway)
			if len(res.Rejected) != 1 || res.Rejected[0].Index != -1 || res.Rejected[0].Code != CodePayloadInvalid {
				t.Fatalf("want the payload refused as %s, got %+v", CodePayloadInvalid, res)
			}
			r := res.Rejected[0]
			checkRejection(t, &r)
			if r.Reason != tc.reason {
				t.Errorf("reason %q\nwant   %q", r.Reason, tc.reason)
			}
			for _, goText := range []string{"invalid character", "looking for", "literal", "unexpected end of JSON", "ï"} {
				if strings.Contains(r.Reason, goText) {
					t.Errorf("reason %q holds encoding/json's text %q", r.Reason, goText)
				}
			}
		})
	}
}

func TestThingseeLimitOptions(t *testing.T) {
	v := NewValidator(Options{})
	want := limits{depth: DefaultMaxDepth, objectKeys: DefaultMaxObjectKeys, keys: DefaultMaxKeys, arrayElems: DefaultMaxArrayElements,
		keyBytes: DefaultMaxKeyBytes, stringBytes: DefaultMaxStringBytes, numberBytes: DefaultMaxNumberBytes}
	if v.lim != want {
		t.Errorf("default limits %+v, want %+v", v.lim, want)
	}
	if v := NewValidator(Options{MaxDepth: -1, MaxKeys: -5}); v.lim != want {
		t.Errorf("negative limits %+v, want the defaults", v.lim)
	}
	if v := NewValidator(Options{MaxDepth: MaxMaxDepth + 1}); v.lim.depth != MaxMaxDepth {
		t.Errorf("depth %d, want the cap %d", v.lim.depth, MaxMaxDepth)
	}
	set := NewValidator(Options{MaxDepth: 2, MaxObjectKeys: 3, MaxKeys: 4, MaxArrayElements: 5, MaxKeyBytes: 6, MaxStringBytes: 7, MaxNumberBytes: 8})
	if got := (limits{2, 3, 4, 5, 6, 7, 8}); set.lim != got {
		t.Errorf("set limits %+v, want %+v", set.lim, got)
	}
}
