package thingsee

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hotMessage is a typical gateway upload (issue 11): a 12100 weather
// message of about 200 bytes with tsmGw and deploymentGroupId.
const hotMessage = `{"tsmId":12100,"tsmEv":10,"airp":101364.599,"lght":6,"temp":21.3,"humd":21.7,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678","tsmGw":"TSGW06DEV00000001","deploymentGroupId":"prfi00samplegroup"}`

// hotAccepted validates hotMessage and returns the accepted message.
func hotAccepted(tb testing.TB) Message {
	tb.Helper()
	res := NewValidator(Options{}).Validate([]byte(hotMessage), testGateway)
	if len(res.Accepted) != 1 {
		tb.Fatalf("hot message not accepted: %+v", res.Rejected)
	}
	return res.Accepted[0]
}

// hotCloud are the cloud fields of the hot path: a gateway without tsmGw
// in its message and a deployment group.
var hotCloud = CloudFields{ReceivedAt: time.Unix(1764273600, 123e6), Gateway: testGateway, DeploymentGroupID: "prfi00samplegroup"}

// TestThingseeHotPathAllocations bounds the heap allocations per call of the
// ingest's hot path (issue 11): a regression that adds one fails here, in
// counts, not timings. The bounds are what the code does now.
func TestThingseeHotPathAllocations(t *testing.T) {
	v := NewValidator(Options{})
	payload := []byte(hotMessage)
	array := []byte("[" + strings.Repeat(hotMessage+",", 9) + hotMessage + "]")
	m := hotAccepted(t)
	var buf []byte
	var msgs []Message
	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{name: "validate", max: 2, f: func() { v.Validate(payload, testGateway) }},
		{name: "validate array of 10", max: 2, f: func() { v.Validate(array, testGateway) }},
		{name: "validate into a reused slice", max: 1, f: func() { msgs = v.ValidateAppend(msgs, payload, testGateway).Accepted }},
		{name: "validate array of 10 into a reused slice", max: 1, f: func() { msgs = v.ValidateAppend(msgs, array, testGateway).Accepted }},
		{name: "normalize", max: 1, f: func() { m.Normalize(hotCloud) }},
		{name: "normalize into a reused buffer", max: 0, f: func() { buf = m.AppendNormalized(buf[:0], hotCloud) }},
		{name: "content id", max: 1, f: func() { m.ContentID(testGateway) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := testing.AllocsPerRun(100, tc.f)
			t.Logf("%s: %v allocs per call", tc.name, got)
			if got > tc.max {
				t.Errorf("%s: %v allocs per call, at most %v allowed", tc.name, got, tc.max)
			}
		})
	}
}

// TestThingseeValidateAppend: ValidateAppend accepts and rejects what
// Validate does, with the accepted messages in the slice given (whatever
// it held before), for a single message, an array, and rejections.
func TestThingseeValidateAppend(t *testing.T) {
	v := NewValidator(Options{})
	for _, tc := range []struct {
		name    string
		payload string
	}{
		{name: "one message", payload: hotMessage},
		{name: "array", payload: "[" + hotMessage + "," + strings.Replace(hotMessage, "12100", "12101", 1) + "]"},
		{name: "one rejected in an array", payload: "[" + hotMessage + `,{"tsmId":12100}]`},
		{name: "rejected", payload: `{"tsmId":12100}`},
		{name: "not JSON", payload: `{"tsmId":`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := v.Validate([]byte(tc.payload), testGateway)
			dst := make([]Message, 3, 8) // stale messages: overwritten
			got := v.ValidateAppend(dst, []byte(tc.payload), testGateway)
			if len(got.Accepted) == 0 {
				got.Accepted = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ValidateAppend = %+v, want %+v", got, want)
			}
			if len(want.Accepted) > 0 && &got.Accepted[0] != &dst[:1][0] {
				t.Error("the accepted messages are not in the slice given")
			}
		})
	}
}

// TestThingseeAppendNormalized: AppendNormalized appends what Normalize
// returns, after what the buffer holds.
func TestThingseeAppendNormalized(t *testing.T) {
	m := hotAccepted(t)
	want := m.Normalize(hotCloud)
	for _, tc := range []struct {
		name string
		dst  []byte
	}{
		{name: "nil", dst: nil},
		{name: "after other bytes", dst: []byte("prefix")},
		{name: "room to spare", dst: make([]byte, 3, 1024)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := string(tc.dst)
			got := m.AppendNormalized(tc.dst, hotCloud)
			if string(got) != before+string(want) {
				t.Errorf("AppendNormalized = %s, want %s%s", got, before, want)
			}
		})
	}
}

// BenchmarkNormalize is Normalize of an accepted message with every
// cloud-added field.
func BenchmarkNormalize(b *testing.B) {
	m := hotAccepted(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Raw)))
	for b.Loop() {
		if out := m.Normalize(hotCloud); len(out) <= len(m.Raw) {
			b.Fatalf("Normalize returned %d bytes", len(out))
		}
	}
}

// BenchmarkContentID is the content id of an accepted message.
func BenchmarkContentID(b *testing.B) {
	m := hotAccepted(b)
	b.ReportAllocs()
	for b.Loop() {
		if id := m.ContentID(testGateway); len(id) != 32 {
			b.Fatalf("content id %q", id)
		}
	}
}

// refContentID is ContentID as first written, streaming each field into
// the hash: the id is stored (the de-duplication key of stored messages),
// so a faster ContentID must give the very same ids.
func refContentID(m Message, gateway string) string {
	rawSum := sha256.Sum256(m.Raw)
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(contentIDDomain))
	field([]byte(gateway))
	field([]byte(m.Tuid))
	field(strconv.AppendInt(nil, int64(m.TsmID), 10))
	field([]byte(m.TsRaw))
	field(rawSum[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// TestThingseeContentIDIsStable pins content ids: the same as the
// streaming reference, for inputs that fit the stack buffer and inputs
// that outgrow it, and one literal id.
func TestThingseeContentIDIsStable(t *testing.T) {
	m := hotAccepted(t)
	if got, want := m.ContentID(testGateway), "425e9fcb489d2a56acd279665351073b"; got != want {
		t.Fatalf("ContentID = %s, want %s", got, want)
	}
	long := m
	long.TsRaw = strings.Repeat("1", 300)
	for _, tc := range []struct {
		name    string
		m       Message
		gateway string
	}{
		{name: "hot message", m: m, gateway: testGateway},
		{name: "no gateway", m: m, gateway: ""},
		{name: "tsmEv 18 without tsmTs", m: Message{TsmID: 1110, Tuid: testTuid, Raw: []byte(`{}`)}, gateway: testGateway},
		{name: "long gateway", m: m, gateway: strings.Repeat("G", 400)},
		{name: "long tsmTs", m: long, gateway: testGateway},
		{name: "negative id", m: Message{TsmID: -12100, Raw: []byte(`{"a":1}`)}, gateway: testGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := tc.m.ContentID(tc.gateway), refContentID(tc.m, tc.gateway); got != want {
				t.Errorf("ContentID = %s, the reference gives %s", got, want)
			}
		})
	}
}

// malformedObjects are payloads (an object or an array of objects) that
// are not JSON, most in ways only the walker's own syntax checks see: the
// one walk must refuse them, so Validate refuses them as the path through
// json.Valid does.
var malformedObjects = []string{
	"{\"a\":\"b\x01\"}", "{\"a\x1f\":1}", "{\"a\":\"\t\"}", "{\"a\":\"\\u00\"}", `{"a":"\x"}`,
	`{"a":01}`, `{"a":-01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`, `{"a":1e+}`, `{"a":1.e5}`, `{"a":+1}`,
	`{"a":--1}`, `{"a":1-2}`, `{"a":0x10}`, `{"a":1E5.5}`, `{"a":NaN}`, `{"a":Infinity}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":True}`, `{"a":truex}`, `{"a":[1,]}`, `{"a":[,1]}`, `{"a":1,}`, `{,"a":1}`,
	`{"a" 1}`, `{"a":}`, `{"a":1}x`, `{"a":1}{}`, `{"a":1`, `{"a":{"b":1}`, `{"a":[1}`, `{'a':1}`,
	`[{"a":1},]`, `[{"a":1} {"b":2}]`, `[{"a":1}]]`, `[{"a":1}`, `[{"a":1},`, `[{"a":01}]`, "[{\"a\":1},{\"b\":\"\x01\"}]",
	`[{"a":1};{"b":2}]`, `[{"a":1}] x`,
}

// TestThingseeOneWalkRefusesWhatJSONRefuses checks that a malformed
// payload gets json.Valid's verdict and our syntax reason, not a walk's
// guess, and that well-formed messages and arrays of them do take the one
// walk.
func TestThingseeOneWalkRefusesWhatJSONRefuses(t *testing.T) {
	v := NewValidator(Options{})
	for _, p := range malformedObjects {
		t.Run(p, func(t *testing.T) {
			payload := []byte(p)
			if json.Valid(payload) {
				t.Fatal("test input is JSON")
			}
			if _, ok := v.validateWellFormed(nil, payload, testGateway); ok {
				t.Fatal("the one walk accepted it")
			}
			if _, ok := v.validateWellFormedArray(nil, payload, testGateway); ok {
				t.Fatal("the one walk accepted it as an array")
			}
			code, reason := v.syntaxReason(payload)
			res := v.Validate(payload, testGateway)
			if len(res.Rejected) != 1 || res.Rejected[0].Index != -1 || res.Rejected[0].Code != code || res.Rejected[0].Reason != reason {
				t.Fatalf("Validate = %+v, want the payload refused: %s", res, reason)
			}
		})
	}
	valid := []string{hotMessage, " \n" + hotMessage + "\r\n\t", `{}`, `{"tsmId":12100,"n":[-0,0.5,1e5,-1E-5,1.5e+3],"t":true,"f":false,"z":null,"s":"a\"\\\u00e9"}`}
	for _, ex := range loadExamples(t, localExamples) {
		valid = append(valid, string(ex.Message))
	}
	for i, p := range valid {
		payload := []byte(p)
		start := skipSpace(payload, 0)
		if _, ok := v.validateWellFormed(nil, payload[start:], testGateway); !ok && payload[start] == '{' {
			t.Errorf("valid object %d did not take the one walk: %s", i, p)
		}
		array := []byte(" [ " + p + " ,\n" + p + "] ")
		if _, ok := v.validateWellFormedArray(nil, array[1:], testGateway); !ok {
			t.Errorf("an array of valid object %d did not take the one walk: %s", i, array)
		}
	}
}
