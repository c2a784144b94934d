package thingsee

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// objectKeys returns the top-level keys of the JSON object b in order, and
// an error when b is not a single valid object or repeats a key (checked
// exactly and ignoring case, as well as in nested objects).
func objectKeys(b []byte) ([]string, error) {
	if !json.Valid(b) {
		return nil, errors.New("not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var keys []string
	type frame struct {
		obj  bool
		seen map[string]bool
	}
	var stack []frame
	expectKey := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				stack = append(stack, frame{obj: d == '{', seen: map[string]bool{}})
			default:
				stack = stack[:len(stack)-1]
			}
			expectKey = len(stack) > 0 && stack[len(stack)-1].obj
			continue
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].obj && expectKey {
			k := tok.(string)
			if stack[top].seen[strings.ToLower(k)] {
				return nil, fmt.Errorf("duplicate key %q", k)
			}
			stack[top].seen[strings.ToLower(k)] = true
			if top == 0 {
				keys = append(keys, k)
			}
			expectKey = false
			continue
		}
		expectKey = top >= 0 && stack[top].obj
	}
	return keys, nil
}

// member returns the raw JSON of key in object b.
func memberOf(t *testing.T, b []byte, key string) (json.RawMessage, bool) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	v, ok := m[key]
	return v, ok
}

func accept(t *testing.T, payload string) Message {
	t.Helper()
	res := testValidator(Options{}).Validate([]byte(payload), testGateway)
	if len(res.Accepted) != 1 {
		t.Fatalf("not accepted: %+v", res.Rejected)
	}
	return res.Accepted[0]
}

func TestThingseeNormalize(t *testing.T) {
	received := time.Date(2025, 11, 27, 20, 0, 0, 123_456_789, time.UTC) // 1764273600.123
	tests := []struct {
		name    string
		msg     Message
		fields  CloudFields
		wantGw  string // "" when tsmGw must not be added
		wantDG  string // "" when deploymentGroupId must not be added
		wantTs  bool   // tsmTs added
		wantOut string // exact output when not empty
	}{
		{name: "adds gateway and group", msg: accept(t, weather("")),
			fields: CloudFields{ReceivedAt: received, Gateway: testGateway, DeploymentGroupID: "prfi00samplegroup"},
			wantGw: `"` + testGateway + `"`, wantDG: `"prfi00samplegroup"`},
		{name: "keeps the message's tsmGw", msg: accept(t, weather(`"tsmGw":"`+testGateway+`"`)),
			fields: CloudFields{ReceivedAt: received, Gateway: testGateway}},
		{name: "keeps the message's deploymentGroupId", msg: accept(t, weather(`"deploymentGroupId":"foo"`)),
			fields: CloudFields{ReceivedAt: received, Gateway: testGateway, DeploymentGroupID: "prfi00other"},
			wantGw: `"` + testGateway + `"`},
		{name: "no group when none given", msg: accept(t, weather("")),
			fields: CloudFields{ReceivedAt: received}},
		{name: "adds tsmTs for network disconnected", msg: accept(t, `{"tsmId":1110,"tsmEv":18,"tsmTuid":"`+testTuid+`","batl":40}`),
			fields: CloudFields{ReceivedAt: received}, wantTs: true,
			wantOut: `{"tsmId":1110,"tsmEv":18,"tsmTuid":"` + testTuid + `","batl":40,"tsmTs":1764273600.123,"tsmCloudTs":1764273600.123}`},
		{name: "escapes the gateway", msg: Message{Raw: []byte(`{"a":1}`), HasTs: true},
			fields: CloudFields{ReceivedAt: received, Gateway: "q\"\\\n\xff"}, wantGw: `"q\"\\\u000a\ufffd"`},
		{name: "trailing whitespace after the brace", msg: Message{Raw: []byte("{\"a\":1} \n\t"), HasTs: true},
			fields:  CloudFields{ReceivedAt: time.Unix(1764273600, 0), Gateway: "G"},
			wantGw:  `"G"`,
			wantOut: "{\"a\":1,\"tsmCloudTs\":1764273600,\"tsmGw\":\"G\"} \n\t"},
		{name: "whitespace before the brace", msg: Message{Raw: []byte("{ \"a\" : 1 \n}"), HasTs: true},
			fields:  CloudFields{ReceivedAt: time.Unix(1764273600, 0)},
			wantOut: "{ \"a\" : 1 \n,\"tsmCloudTs\":1764273600}"},
		{name: "empty object", msg: Message{Raw: []byte(`{}`), HasTs: true},
			fields:  CloudFields{ReceivedAt: time.Unix(1764273600, 0)},
			wantOut: `{"tsmCloudTs":1764273600}`},
		{name: "empty object with whitespace", msg: Message{Raw: []byte("{ \n }\n")},
			fields:  CloudFields{ReceivedAt: time.Unix(1764273600, 0), Gateway: "G"},
			wantTs:  true,
			wantGw:  `"G"`,
			wantOut: "{ \n \"tsmTs\":1764273600,\"tsmCloudTs\":1764273600,\"tsmGw\":\"G\"}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := bytes.Clone(tc.msg.Raw)
			out := tc.msg.Normalize(tc.fields)
			if !bytes.Equal(tc.msg.Raw, orig) {
				t.Fatalf("Normalize modified Raw: %q", tc.msg.Raw)
			}
			if tc.wantOut != "" && string(out) != tc.wantOut {
				t.Errorf("Normalize = %q\nwant        %q", out, tc.wantOut)
			}
			keys, err := objectKeys(out)
			if err != nil {
				t.Fatalf("Normalize = %s: %v", out, err)
			}
			// Byte-for-byte prefix: everything of Raw before its closing
			// brace comes first, unchanged; what follows is only ","
			// (when Raw has members), the cloud members and the brace.
			end := bytes.LastIndexByte(orig, '}')
			if !bytes.HasPrefix(out, orig[:end]) || !bytes.HasSuffix(out, orig[end:]) {
				t.Fatalf("original bytes not preserved:\n raw %q\n out %q", orig, out)
			}
			added := out[end : len(out)-len(orig[end:])]
			origKeys, _ := objectKeys(orig)
			if len(origKeys) > 0 {
				added = bytes.TrimPrefix(added, []byte(","))
			}
			addedKeys, err := objectKeys(append(append([]byte("{"), added...), '}'))
			if err != nil {
				t.Fatalf("appended members %q: %v", added, err)
			}
			if got, want := len(keys), len(origKeys)+len(addedKeys); got != want {
				t.Errorf("keys %v, want the original %v plus %v", keys, origKeys, addedKeys)
			}

			cloud, ok := memberOf(t, out, "tsmCloudTs")
			if !ok {
				t.Fatalf("no tsmCloudTs in %s", out)
			}
			if !slices.Contains(addedKeys, "tsmCloudTs") {
				t.Errorf("tsmCloudTs not among the appended members %v", addedKeys)
			}
			if tc.fields.ReceivedAt.Equal(received) && string(cloud) != "1764273600.123" {
				t.Errorf("tsmCloudTs = %s, want 1764273600.123", cloud)
			}
			assertAdded(t, addedKeys, out, "tsmGw", tc.wantGw)
			assertAdded(t, addedKeys, out, "deploymentGroupId", tc.wantDG)
			ts := ""
			if tc.wantTs {
				ts = string(cloud)
			}
			assertAdded(t, addedKeys, out, "tsmTs", ts)
		})
	}
}

// assertAdded checks that key was appended with raw value want, or not
// appended at all when want is "".
func assertAdded(t *testing.T, added []string, out []byte, key, want string) {
	t.Helper()
	has := false
	for _, k := range added {
		has = has || k == key
	}
	if want == "" {
		if has {
			t.Errorf("%s was added to %s, want it left alone", key, out)
		}
		return
	}
	got, _ := memberOf(t, out, key)
	if !has || string(got) != want {
		t.Errorf("%s = %s (added %v), want %s added", key, got, has, want)
	}
}

func TestThingseeNormalizeCloudTsFormat(t *testing.T) {
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{name: "whole second", at: time.Unix(1764273600, 0), want: "1764273600"},
		{name: "milliseconds", at: time.Unix(1764273600, 123_000_000), want: "1764273600.123"},
		{name: "trailing zero trimmed", at: time.Unix(1764273600, 120_000_000), want: "1764273600.12"},
		{name: "leading zero kept", at: time.Unix(1764273600, 5_000_000), want: "1764273600.005"},
		{name: "sub-millisecond truncated", at: time.Unix(1764273600, 999_999), want: "1764273600"},
		{name: "before 1970", at: time.Unix(-2, 500_000_000), want: "-1.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(appendCloudTs(nil, tc.at)); got != tc.want {
				t.Errorf("appendCloudTs(%v) = %s, want %s", tc.at, got, tc.want)
			}
		})
	}
}

func TestThingseeNormalizeLeavesNonObjectAlone(t *testing.T) {
	m := Message{Raw: []byte(`[1]`)}
	if out := m.Normalize(CloudFields{ReceivedAt: time.Unix(0, 0)}); string(out) != `[1]` {
		t.Errorf("Normalize(%s) = %s, want it unchanged", m.Raw, out)
	}
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestThingseeContentID(t *testing.T) {
	base := accept(t, weather(""))
	id := base.ContentID(testGateway)
	if !hex32.MatchString(id) {
		t.Fatalf("ContentID = %q, want 32 lowercase hex digits", id)
	}
	if again := accept(t, weather("")).ContentID(testGateway); again != id {
		t.Errorf("identical resend: %s, want %s", again, id)
	}

	change := func(f func(m *Message)) Message {
		m := base
		m.Raw = bytes.Clone(base.Raw)
		f(&m)
		return m
	}
	tests := []struct {
		name    string
		msg     Message
		gateway string
	}{
		{name: "other gateway", msg: base, gateway: "TSGW06DEV00000002"},
		{name: "one byte of Raw", msg: change(func(m *Message) { m.Raw[len(m.Raw)-3]++ })},
		{name: "whitespace in Raw", msg: accept(t, strings.Replace(weather(""), ",", ", ", 1))},
		{name: "tsmTs", msg: accept(t, strings.Replace(weather(""), "1764273000", "1764273001", 1))},
		{name: "tsmTs text only", msg: change(func(m *Message) { m.TsRaw += ".0" })},
		{name: "tuid", msg: change(func(m *Message) { m.Tuid = "TSEN01ABC12345679" })},
		{name: "tsmId", msg: change(func(m *Message) { m.TsmID = 12101 })},
		// The last gateway byte moved to the front of the tuid: the same
		// concatenation, told apart only by the length prefixes.
		{name: "field boundary moved", msg: change(func(m *Message) { m.Tuid = testGateway[len(testGateway)-1:] + m.Tuid }),
			gateway: testGateway[:len(testGateway)-1]},
	}
	seen := map[string]string{id: "base"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := tc.gateway
			if gw == "" {
				gw = testGateway
			}
			got := tc.msg.ContentID(gw)
			if prev, dup := seen[got]; dup {
				t.Errorf("ContentID %s equals that of %s", got, prev)
			}
			seen[got] = tc.name
		})
	}
	// Length prefixes keep ("ab", "c") and ("a", "bc") apart.
	a := Message{Tuid: "c"}.ContentID("ab")
	b := Message{Tuid: "bc"}.ContentID("a")
	if a == b {
		t.Error("ContentID joins fields ambiguously")
	}
}
