package thingsee

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// FuzzValidate checks invariants of Validate on arbitrary payloads: it never
// panics; every rejection has a code and a bounded reason; every accepted
// message is valid JSON that encoding/json reads the same way we did, keeps
// within the structural limits as a Decoder.Token walk measures them, and
// normalises to valid JSON without duplicate keys; a message refused for a
// structural limit does break it by that measure; and the outcomes cover
// every element of an array payload exactly once.
func FuzzValidate(f *testing.F) {
	for _, ex := range loadExamples(f, localExamples) {
		gw := exampleGateway(f, ex.Message)
		f.Add([]byte(ex.Message), gw)
		f.Add(withRealBody(f, ex.Message, defaultUploader), defaultUploader)
		f.Add([]byte("["+string(ex.Message)+", "+string(ex.Message)+"]"), gw)
	}
	for _, s := range []string{
		"[" + weather("") + "," + msg(13100, 10, `"moveCount":1`) + ", 7, [], {}]",
		weather(`"tsmGw":"` + testGateway + `"`),
		msg(11200, 10, heartbeats(2)),
		msg(17201, 10, `"dist":[[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4]]`),
		`{"tsmId":1110,"tsmEv":18,"tsmTuid":"` + testTuid + `","batl":40}`,
		msg(1220, 10, `"x":1,"X":2`),
		weather(`"te\u006dp":1`),
		`[]`, `[[]]`, `{}`, ` `, `"x"`, `{"a":1}{}`,
		// Hostile shapes (issue 8 finding 6) and syntax errors (finding 7).
		unknown(`"x":` + nestedArrays(6)), unknown(`"x":` + nestedArrays(5)),
		unknown(`"x":` + strings.Repeat(`{"a":`, 6) + "1" + strings.Repeat("}", 6)),
		nestedArrays(3000), strings.Repeat("[", 20000),
		unknown(`"\ud800":1`), unknown(`"a\udc00":"\ud83d\ude00"`), unknown(`"x":"\ud83d"`), unknown(`"\\ud800":"\\u0000"`),
		unknown(`"a\u0000b":1`), unknown(`"x":"a\u0000b"`), unknown(`"x":{"\u001b[31m":1}`), unknown("\"a\u202eb\":1"),
		unknown(`"a\u2028":1`), unknown("\"a\x7fb\":1"),
		unknown(keyList(30, "k")), unknown(`"x":[` + strings.Repeat(keysObject(10)+",", 4) + `{}]`),
		unknown(`"x":[` + strings.Repeat("0,", 20) + `0]`),
		unknown(`"` + strings.Repeat("k", 30) + `":1`), unknown(`"x":"` + strings.Repeat("s", 70) + `"`),
		unknown(`"x":` + strings.Repeat("9", 30)),
		"\xef\xbb\xbf" + weather(""), `{"tsmId":x}`, "{\"a\":\"b\x01\"}", `{"a":1,}`, `{"a":é}`,
	} {
		f.Add([]byte(s), testGateway)
	}
	for _, s := range malformedObjects {
		f.Add([]byte(s), testGateway)
	}
	v := NewValidator(fuzzOptions)
	f.Fuzz(func(t *testing.T, payload []byte, gateway string) {
		res := v.Validate(payload, gateway)
		checkOneWalk(t, v, payload, gateway, res)
		for i := range res.Rejected {
			checkRejection(t, &res.Rejected[i])
		}
		for _, m := range res.Accepted {
			checkAccepted(t, m, gateway)
			checkWithinLimits(t, m.Raw, &v.lim)
		}
		for _, r := range res.Rejected {
			if r.Index >= 0 {
				checkBreaksLimit(t, &r, &v.lim)
			}
		}

		start := skipSpace(payload, 0)
		if json.Valid(payload) && utf8.Valid(payload) {
			compareWalkers(t, payload[start:])
		}
		switch {
		case len(res.Rejected) == 1 && res.Rejected[0].Index == -1:
			if len(res.Accepted) != 0 {
				t.Fatalf("payload refused but messages accepted: %+v", res)
			}
			if json.Valid(payload) && utf8.Valid(payload) && payload[start] == '{' {
				t.Fatalf("a valid object was refused as a payload: %+v", res.Rejected[0])
			}
		case !json.Valid(payload) || !utf8.Valid(payload):
			t.Fatalf("invalid JSON %q was not refused: %+v", payload, res)
		case payload[start] == '[':
			var elems []json.RawMessage
			if err := json.Unmarshal(payload, &elems); err != nil {
				t.Fatalf("valid array does not unmarshal: %v", err)
			}
			covered := make([]int, len(elems))
			for _, m := range res.Accepted {
				covered[m.Index]++
				if !bytes.Equal(m.Raw, elems[m.Index]) {
					t.Fatalf("element %d: Raw %q, want %q", m.Index, m.Raw, elems[m.Index])
				}
			}
			for _, r := range res.Rejected {
				covered[r.Index]++
			}
			for i, n := range covered {
				if n != 1 {
					t.Fatalf("element %d has %d outcomes: %+v", i, n, res)
				}
			}
		default:
			if n := len(res.Accepted) + len(res.Rejected); n != 1 {
				t.Fatalf("single object has %d outcomes", n)
			}
		}
	})
}

// checkOneWalk requires Validate's one-walk path (objects, arrays of
// objects) to decide exactly as the path through json.Valid (res is Validate's
// outcome), and the walker never to read a whole object without an error
// unless it is JSON: that is what lets the one walk skip json.Valid.
func checkOneWalk(t *testing.T, v *Validator, payload []byte, gateway string, res Result) {
	t.Helper()
	if ref := v.validate(nil, payload, gateway, false); !reflect.DeepEqual(res, ref) {
		t.Fatalf("payload %q: one walk gives %+v, the path through json.Valid %+v", payload, res, ref)
	}
	obj := bytes.TrimRight(payload[skipSpace(payload, 0):], " \t\r\n")
	if len(obj) == 0 || obj[0] != '{' || !utf8.Valid(obj) {
		return
	}
	for _, lim := range []*limits{&v.lim, &unlimited} {
		if _, n, err := walkObject(bytes.Clone(obj), lim, nil); err == nil && n == len(obj) && !json.Valid(obj) {
			t.Fatalf("the walker read %q whole, which is not JSON", obj)
		}
	}
}

// compareWalkers requires walkObject and the Decoder.Token reference to
// read the object v, or every object element of the array v, identically.
func compareWalkers(t *testing.T, v []byte) {
	t.Helper()
	var objs []json.RawMessage
	switch v[0] {
	case '{':
		objs = append(objs, v)
	case '[':
		if err := json.Unmarshal(v, &objs); err != nil {
			t.Fatalf("valid array does not unmarshal: %v", err)
		}
	}
	for _, o := range objs {
		if o[0] != '{' {
			continue
		}
		if ok, diff := sameWalk(o); !ok {
			t.Fatalf("object %q: %s", o, diff)
		}
	}
}

// checkAccepted asserts what holds for every accepted message: encoding/json
// reads its header as Validate did (no parser differential), and Normalize
// yields valid JSON without duplicate keys.
func checkAccepted(t *testing.T, m Message, gateway string) {
	t.Helper()
	var h struct {
		TsmID   json.Number `json:"tsmId"`
		TsmEv   json.Number `json:"tsmEv"`
		TsmTuid string      `json:"tsmTuid"`
		TsmGw   *string     `json:"tsmGw"`
		TsmTs   json.Number `json:"tsmTs"`
	}
	dec := json.NewDecoder(bytes.NewReader(m.Raw))
	dec.UseNumber()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("accepted Raw %q does not decode: %v", m.Raw, err)
	}
	id, _ := parseJSONInt(string(h.TsmID))
	ev, _ := parseJSONInt(string(h.TsmEv))
	if int(id) != m.TsmID || int(ev) != m.TsmEv || h.TsmTuid != m.Tuid || string(h.TsmTs) != m.TsRaw {
		t.Fatalf("encoding/json reads %+v from %q, Validate read %+v", h, m.Raw, m)
	}
	if h.TsmGw != nil && *h.TsmGw != gateway {
		t.Fatalf("accepted tsmGw %q from gateway %q", *h.TsmGw, gateway)
	}
	if !ValidTUID(m.Tuid) {
		t.Fatalf("accepted malformed tuid %q", m.Tuid)
	}
	out := m.Normalize(CloudFields{ReceivedAt: time.Unix(1764273600, 5e6), Gateway: gateway, DeploymentGroupID: "prfi00x"})
	if _, err := objectKeys(out); err != nil {
		t.Fatalf("Normalize(%q) = %q: %v", m.Raw, out, err)
	}
	if !bytes.HasPrefix(out, m.Raw[:strings.LastIndexByte(string(m.Raw), '}')]) {
		t.Fatalf("Normalize(%q) = %q does not keep the original bytes", m.Raw, out)
	}
}

// fuzzOptions are the fuzz target's options: limits small enough for the
// fuzzer to reach, large enough for every example (at most 14 keys, keys of
// 19 bytes, strings of 20, numbers of 10 characters, depth 1; the seeds'
// heartbeats and dist reach depth 3).
var fuzzOptions = Options{
	Now:              func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) },
	MaxMessages:      8,
	MaxMessageBytes:  4096,
	MaxDepth:         5,
	MaxObjectKeys:    20,
	MaxKeys:          40,
	MaxArrayElements: 16,
	MaxKeyBytes:      24,
	MaxStringBytes:   64,
	MaxNumberBytes:   24,
}

// shape is a message's structure as a json.Decoder.Token walk measures it,
// independently of the walker: the largest of each structural limit's
// quantity, and whether any key or string holds what is refused.
type shape struct {
	limits
	badKey    bool // a key holds a control, format or separator character
	nulString bool // a string value holds NUL
}

// measure measures the object raw with json.Decoder.Token. It cannot see
// unpaired surrogates: the Decoder turns them into U+FFFD.
func measure(raw []byte) (shape, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		obj bool
		n   int  // keys or elements so far
		key bool // an object's next string is a key
	}
	var sh shape
	var stack []frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return sh, nil
		}
		if err != nil {
			return sh, err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			switch {
			case top.obj && top.key:
				k := tok.(string)
				top.n++
				top.key = false
				sh.keys++
				sh.objectKeys = max(sh.objectKeys, top.n)
				sh.keyBytes = max(sh.keyBytes, len(k))
				for _, r := range k {
					sh.badKey = sh.badKey || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
				}
				continue
			case top.obj:
				top.key = true
			default:
				top.n++
				sh.arrayElems = max(sh.arrayElems, top.n)
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			stack = append(stack, frame{obj: t == '{', key: t == '{'})
			sh.depth = max(sh.depth, len(stack))
		case string:
			sh.stringBytes = max(sh.stringBytes, len(t))
			sh.nulString = sh.nulString || strings.IndexByte(t, 0) >= 0
		case json.Number:
			sh.numberBytes = max(sh.numberBytes, len(t))
		}
	}
}

// checkWithinLimits requires an accepted message to keep within lim.
func checkWithinLimits(t *testing.T, raw []byte, lim *limits) {
	t.Helper()
	sh, err := measure(raw)
	if err != nil {
		t.Fatalf("accepted %q does not decode: %v", raw, err)
	}
	l := sh.limits
	if l.depth > lim.depth || l.objectKeys > lim.objectKeys || l.keys > lim.keys || l.arrayElems > lim.arrayElems ||
		l.keyBytes > lim.keyBytes || l.stringBytes > lim.stringBytes || l.numberBytes > lim.numberBytes || sh.badKey || sh.nulString {
		t.Fatalf("accepted %q has shape %+v, beyond the limits %+v", raw, sh, *lim)
	}
}

// checkBreaksLimit requires a message refused for a structural limit to
// break it.
func checkBreaksLimit(t *testing.T, r *Rejection, lim *limits) {
	t.Helper()
	sh, err := measure(r.Raw)
	if err != nil {
		return // cut to MaxMessageBytes, or not an object
	}
	l := sh.limits
	broken := map[string]bool{
		CodeTooDeep:       l.depth > lim.depth,
		CodeTooManyKeys:   l.objectKeys > lim.objectKeys || l.keys > lim.keys,
		CodeArrayTooLong:  l.arrayElems > lim.arrayElems,
		CodeKeyTooLong:    l.keyBytes > lim.keyBytes,
		CodeStringTooLong: l.stringBytes > lim.stringBytes,
		CodeNumberTooLong: l.numberBytes > lim.numberBytes,
	}
	if b, ok := broken[r.Code]; ok && !b {
		t.Fatalf("%q refused as %s (%s), but its shape %+v keeps within %+v", r.Raw, r.Code, r.Reason, sh, *lim)
	}
}
