package thingsee

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const (
	testGateway = "TSGW06DEV00000001"
	testTuid    = "TSEN01ABC12345678"
)

// testNow is the fixed clock of the rule tests: 2025-11-27T20:00:00Z.
var testNow = time.Unix(1764273600, 0).UTC()

func testValidator(o Options) *Validator {
	if o.Now == nil {
		o.Now = func() time.Time { return testNow }
	}
	return NewValidator(o)
}

// weather returns a valid 12100 message with extra members spliced in
// before the closing brace.
func weather(extra string) string {
	s := `{"tsmId":12100,"tsmEv":10,"temp":21.3,"humd":45.2,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `"`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

// msg returns a message with the given tsmId and tsmEv, a valid header and
// the given properties.
func msg(id, ev int, props string) string {
	s := `{"tsmId":` + itoa(id) + `,"tsmEv":` + itoa(ev) + `,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `"`
	if props != "" {
		s += "," + props
	}
	return s + "}"
}

func heartbeats(n int) string {
	var b strings.Builder
	b.WriteString(`"heartbeats":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"tuid":"TSPR04ABC12345678","slotBits":3}`)
	}
	b.WriteString("]")
	return b.String()
}

func TestThingseeValidateRejects(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name    string
		opts    Options
		payload string
		gateway string // testGateway when empty
		index   int
		code    string
		field   string
		reason  string // a substring the reason must hold, when not empty
	}{
		// Payload level.
		{name: "empty payload", payload: ``, index: -1, code: CodePayloadInvalid},
		{name: "truncated JSON", payload: `{"tsmId":`, index: -1, code: CodePayloadInvalid},
		{name: "trailing garbage", payload: weather("") + ` x`, index: -1, code: CodePayloadInvalid},
		{name: "two top-level values", payload: weather("") + weather(""), index: -1, code: CodePayloadInvalid},
		{name: "invalid UTF-8", payload: weather(`"psn":"` + "\xff" + `"`), index: -1, code: CodePayloadInvalid},
		{name: "empty array", payload: ` [ ] `, index: -1, code: CodePayloadInvalid},
		{name: "top-level string", payload: `"hello"`, index: -1, code: CodeNotObject},
		{name: "top-level number", payload: ` 42 `, index: -1, code: CodeNotObject},
		{name: "top-level null", payload: `null`, index: -1, code: CodeNotObject},
		{name: "too many elements", opts: Options{MaxMessages: 2}, payload: "[" + weather("") + "," + weather("") + "," + weather("") + "]", index: -1, code: CodeTooMany},
		// Element and object level.
		{name: "array element is a number", payload: `[` + weather("") + `, 5]`, index: 1, code: CodeNotObject},
		{name: "nested array element", payload: `[[` + weather("") + `]]`, index: 0, code: CodeNotObject},
		{name: "too large", opts: Options{MaxMessageBytes: 64}, payload: weather(""), index: 0, code: CodeTooLarge},
		{name: "duplicate header key", payload: weather(`"tsmId":12100`), code: CodeDuplicateKey, field: "tsmId"},
		{name: "duplicate property key", payload: weather(`"temp":22`), code: CodeDuplicateKey, field: "temp"},
		{name: "duplicate key by escape", payload: weather(`"te\u006dp":22`), code: CodeDuplicateKey, field: "temp"},
		{name: "keys differing in case", payload: weather(`"TEMP":22`), code: CodeDuplicateKey, field: "TEMP"},
		{name: "header key differing in case", payload: weather(`"TSMID":1`), code: CodeDuplicateKey, field: "tsmId"},
		{name: "duplicate key in heartbeat", payload: msg(11200, 10, `"heartbeats":[{"tuid":"TSPR04ABC12345678","slotBits":1,"slotBits":2}]`), code: CodeDuplicateKey, field: "heartbeats", reason: `"slotBits"`},
		// Header.
		{name: "downlink tsmDstTuid", payload: weather(`"tsmDstTuid":"TSPR04ABC12345678"`), code: CodeDownlinkField, field: "tsmDstTuid"},
		{name: "cloud tsmCloudTs", payload: weather(`"tsmCloudTs":1764273600`), code: CodeCloudField, field: "tsmCloudTs"},
		{name: "tsmId missing", payload: `{"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldMissing, field: "tsmId"},
		{name: "tsmId string", payload: `{"tsmId":"12100","tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldType, field: "tsmId"},
		{name: "tsmId fraction", payload: `{"tsmId":12100.5,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldType, field: "tsmId"},
		{name: "tsmId near-integral fraction", payload: `{"tsmId":12100.0000000000000000001,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldType, field: "tsmId"},
		{name: "tsmId data id 50", payload: msg(12050, 10, `"temp":1`), code: CodeFieldRange, field: "tsmId"},
		{name: "tsmId profile 0", payload: msg(100, 10, `"temp":1`), code: CodeFieldRange, field: "tsmId"},
		{name: "tsmId profile 1000", payload: msg(1000100, 10, `"temp":1`), code: CodeFieldRange, field: "tsmId"},
		{name: "tsmId negative", payload: msg(-12100, 10, `"temp":1`), code: CodeFieldRange, field: "tsmId"},
		{name: "tsmId beyond int64", payload: `{"tsmId":123456789012345678901234567890,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `"}`, code: CodeFieldRange, field: "tsmId"},
		{name: "tsmId huge exponent", payload: `{"tsmId":1e400,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `"}`, code: CodeFieldRange, field: "tsmId"},
		{name: "tsmEv missing", payload: `{"tsmId":12100,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldMissing, field: "tsmEv"},
		{name: "tsmEv 1000", payload: msg(12100, 1000, `"temp":1`), code: CodeFieldRange, field: "tsmEv"},
		{name: "tsmEv null", payload: `{"tsmId":12100,"tsmEv":null,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldType, field: "tsmEv"},
		{name: "tsmTuid missing", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"temp":1}`, code: CodeFieldMissing, field: "tsmTuid"},
		{name: "tsmTuid number", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":17,"temp":1}`, code: CodeFieldType, field: "tsmTuid"},
		{name: "tsmTuid placeholder", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"TSPOD6789","temp":1}`, code: CodeTuidFormat, field: "tsmTuid"},
		{name: "tsmTuid lowercase", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"tsen01abc12345678","temp":1}`, code: CodeTuidFormat, field: "tsmTuid"},
		{name: "tsmTuid 18 characters", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"TSEN01ABC123456789","temp":1}`, code: CodeTuidFormat, field: "tsmTuid"},
		{name: "tsmGw other gateway", payload: weather(`"tsmGw":"TSGW06DEV00000002"`), code: CodeGatewayMismatch, field: "tsmGw", reason: `"TSGW06DEV00000002" does not match the uploading gateway "TSGW06DEV00000001"`},
		{name: "tsmGw number", payload: weather(`"tsmGw":1`), code: CodeFieldType, field: "tsmGw"},
		{name: "tsmGw empty with empty uploader", payload: weather(`"tsmGw":""`), gateway: "-", code: CodeFieldRange, field: "tsmGw"},
		{name: "tsmTs missing", payload: `{"tsmId":12100,"tsmEv":10,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldMissing, field: "tsmTs"},
		{name: "tsmTs string", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":"1764273000","tsmTuid":"` + testTuid + `","temp":1}`, code: CodeFieldType, field: "tsmTs"},
		{name: "tsmTs before 2000", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":946684799.999,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeTsInvalid, field: "tsmTs"},
		{name: "tsmTs zero", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":0,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeTsInvalid, field: "tsmTs"},
		{name: "tsmTs not finite", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1e400,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeTsInvalid, field: "tsmTs"},
		{name: "tsmTs 11 minutes ahead", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764274260,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeTsFuture, field: "tsmTs"},
		{name: "tsmTs ahead of custom skew", opts: Options{MaxFutureSkew: time.Second}, payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273601.5,"tsmTuid":"` + testTuid + `","temp":1}`, code: CodeTsFuture, field: "tsmTs"},
		{name: "tsmGwTs string", payload: weather(`"tsmGwTs":"now"`), code: CodeFieldType, field: "tsmGwTs"},
		{name: "tsmAp too long", payload: weather(`"tsmAp":"` + strings.Repeat("a", 65) + `"`), code: CodeFieldRange, field: "tsmAp"},
		{name: "tsmAp number", payload: weather(`"tsmAp":1`), code: CodeFieldType, field: "tsmAp"},
		{name: "transactionId too large", payload: weather(`"transactionId":2147483648`), code: CodeFieldRange, field: "transactionId"},
		{name: "transactionId negative", payload: weather(`"transactionId":-1`), code: CodeFieldRange, field: "transactionId"},
		{name: "transactionId fraction", payload: weather(`"transactionId":1.5`), code: CodeFieldType, field: "transactionId"},
		{name: "deploymentGroupId uppercase", payload: weather(`"deploymentGroupId":"PRFI00"`), code: CodeFieldRange, field: "deploymentGroupId"},
		{name: "deploymentGroupId empty", payload: weather(`"deploymentGroupId":""`), code: CodeFieldRange, field: "deploymentGroupId"},
		{name: "deploymentGroupId topic wildcard", payload: weather(`"deploymentGroupId":"prfi00/#"`), code: CodeFieldRange, field: "deploymentGroupId"},
		{name: "deploymentGroupId 39 characters", payload: weather(`"deploymentGroupId":"` + strings.Repeat("a", 39) + `"`), code: CodeFieldRange, field: "deploymentGroupId"},
		{name: "header lookalike key", payload: weather(`"TsmGw":"evil"`), code: CodeFieldUnknown, field: "TsmGw"},
		{name: "header lookalike key in unknown id", payload: msg(99100, 10, `"tsmap":"x"`), code: CodeFieldUnknown, field: "tsmap"},
		{name: "unknown id refused", opts: Options{RejectUnknownIDs: true}, payload: msg(99100, 10, `"x":1`), code: CodeUnknownID, field: "tsmId"},
		// Properties.
		{name: "unknown property", payload: weather(`"foo":1`), code: CodeFieldUnknown, field: "foo", reason: "allowed: airp, humd, lght, temp"},
		{name: "unknown property first in name order", payload: msg(12100, 10, `"zzz":1,"humd":101`), code: CodeFieldRange, field: "humd"},
		{name: "temp out of range", payload: msg(12100, 10, `"temp":120`), code: CodeFieldRange, field: "temp", reason: "temp: 120 is out of range -40..85 for tsmId 12100"},
		{name: "temp string", payload: msg(12100, 10, `"temp":"21"`), code: CodeFieldType, field: "temp"},
		{name: "temp null", payload: msg(12100, 10, `"temp":null`), code: CodeFieldType, field: "temp"},
		{name: "temp not finite", payload: msg(12100, 10, `"temp":-1e999`), code: CodeFieldRange, field: "temp"},
		{name: "humd over 100", payload: msg(12100, 10, `"humd":100.5`), code: CodeFieldRange, field: "humd"},
		{name: "weather without property", payload: msg(12100, 10, ``), code: CodeFieldMissing},
		{name: "batl missing", payload: msg(1110, 10, `"chrg":1`), code: CodeFieldMissing, field: "batl"},
		{name: "batl over 100", payload: msg(1110, 10, `"batl":101`), code: CodeFieldRange, field: "batl"},
		{name: "chrg 3", payload: msg(1110, 10, `"batl":1,"chrg":3`), code: CodeFieldRange, field: "chrg"},
		{name: "accx fraction", payload: msg(1111, 10, `"accx":1.5,"accy":0,"accz":0`), code: CodeFieldType, field: "accx"},
		{name: "accz beyond 4096", payload: msg(1111, 10, `"accx":1,"accy":0,"accz":4097`), code: CodeFieldRange, field: "accz"},
		{name: "accy missing", payload: msg(1111, 10, `"accx":1,"accz":0`), code: CodeFieldMissing, field: "accy"},
		{name: "rssi 256", payload: msg(1200, 10, `"wpnode":"n1","rssi":256`), code: CodeFieldRange, field: "rssi"},
		{name: "neighNodeInfo 0", payload: msg(1200, 10, `"wpnode":"n1","rssi":20,"neighNodeInfo":0`), code: CodeFieldRange, field: "neighNodeInfo"},
		{name: "wpnode missing", payload: msg(1200, 10, `"rssi":20`), code: CodeFieldMissing, field: "wpnode"},
		{name: "1220 negative counter", payload: msg(1220, 10, `"bufferDrops":-1`), code: CodeFieldRange, field: "bufferDrops"},
		{name: "1220 string counter", payload: msg(1220, 10, `"bufferDrops":"1"`), code: CodeFieldType, field: "bufferDrops"},
		{name: "1220 counter with an odd name", payload: msg(1220, 10, `"buffer drops":1`), code: CodeFieldUnknown, field: "buffer drops"},
		{name: "result unknown value", payload: msg(1301, 10, `"result":"maybe"`), code: CodeFieldRange, field: "result"},
		{name: "result number", payload: msg(1303, 10, `"result":1`), code: CodeFieldType, field: "result"},
		{name: "resultReason boolean", payload: msg(1301, 10, `"result":"fail","resultReason":true`), code: CodeFieldType, field: "resultReason"},
		{name: "diagGroup 6", payload: msg(1400, 34, `"diagGroup":6`), code: CodeFieldRange, field: "diagGroup"},
		{name: "diagData object", payload: msg(1403, 29, `"diagData":{}`), code: CodeFieldType, field: "diagData"},
		{name: "string over 256 bytes", payload: msg(1100, 11, `"swVersion":"`+long+`"`), code: CodeFieldRange, field: "swVersion"},
		{name: "state 2", payload: msg(2100, 7, `"state":2`), code: CodeFieldRange, field: "state"},
		{name: "jam state -1", payload: msg(2101, 7, `"state":-1`), code: CodeFieldRange, field: "state"},
		{name: "hall 2", payload: msg(12101, 10, `"hall":2`), code: CodeFieldRange, field: "hall"},
		{name: "hallCount negative", payload: msg(12101, 10, `"hall":1,"hallCount":-1`), code: CodeFieldRange, field: "hallCount"},
		{name: "moveCount fraction", payload: msg(13100, 10, `"moveCount":1.25`), code: CodeFieldType, field: "moveCount"},
		{name: "histogram negative", payload: msg(16100, 10, `"histogram3":-2`), code: CodeFieldRange, field: "histogram3"},
		{name: "dist negative", payload: msg(17100, 10, `"dist":-1`), code: CodeFieldRange, field: "dist"},
		{name: "dist 2D with 3 rows", payload: msg(17201, 10, `"dist":[[1,2,3,4],[1,2,3,4],[1,2,3,4]]`), code: CodeFieldType, field: "dist"},
		{name: "dist 2D with a short row", payload: msg(17201, 10, `"dist":[[1,2,3,4],[1,2,3],[1,2,3,4],[1,2,3,4]]`), code: CodeFieldType, field: "dist"},
		{name: "dist 2D with a negative cell", payload: msg(17201, 10, `"dist":[[1,2,3,4],[1,2,3,4],[1,2,-3,4],[1,2,3,4]]`), code: CodeFieldRange, field: "dist", reason: "dist[2][2]: -3 is out of range"},
		{name: "dist 2D number", payload: msg(17201, 10, `"dist":5`), code: CodeFieldType, field: "dist"},
		{name: "angle 361", payload: msg(18100, 10, `"angle":361`), code: CodeFieldRange, field: "angle"},
		{name: "carbonDioxide 40001", payload: msg(24100, 10, `"carbonDioxide":40001`), code: CodeFieldRange, field: "carbonDioxide"},
		{name: "co2 status -2", payload: msg(24100, 10, `"carbonDioxide":400,"status":-2`), code: CodeFieldRange, field: "status"},
		{name: "tvoc 18001", payload: msg(24101, 10, `"tvoc":18001`), code: CodeFieldRange, field: "tvoc"},
		{name: "heartbeats over 1000", payload: msg(11200, 10, heartbeats(1001)), opts: Options{MaxMessageBytes: 1 << 20}, code: CodeFieldRange, field: "heartbeats"},
		{name: "heartbeat bad tuid", payload: msg(11200, 10, `"heartbeats":[{"tuid":"TSPR04ABC12345678","slotBits":1},{"tuid":"TSPR04","slotBits":1}]`), code: CodeTuidFormat, field: "heartbeats", reason: `heartbeats[1].tuid: "TSPR04" is not`},
		{name: "heartbeat negative slotBits", payload: msg(11200, 10, `"heartbeats":[{"tuid":"TSPR04ABC12345678","slotBits":-1}]`), code: CodeFieldRange, field: "heartbeats"},
		{name: "heartbeat extra key", payload: msg(11200, 10, `"heartbeats":[{"tuid":"TSPR04ABC12345678","slotBits":1,"x":1}]`), code: CodeFieldUnknown, field: "heartbeats"},
		{name: "heartbeat without slotBits", payload: msg(11200, 10, `"heartbeats":[{"tuid":"TSPR04ABC12345678"}]`), code: CodeFieldMissing, field: "heartbeats"},
		{name: "heartbeats missing", payload: msg(11200, 10, `"slotInterval":60`), code: CodeFieldMissing, field: "heartbeats"},
		{name: "11201 tuid lowercase", payload: msg(11201, 10, `"tuid":"tspr04abc12345678","slotBits":1`), code: CodeTuidFormat, field: "tuid"},
		{name: "threshold event without property", payload: msg(13101, 9, ``), code: CodeFieldMissing},
		{name: "threshold event with unknown property", payload: msg(13101, 9, `"x":1`), code: CodeFieldUnknown, field: "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := tc.gateway
			switch gw {
			case "":
				gw = testGateway
			case "-":
				gw = ""
			}
			res := testValidator(tc.opts).Validate([]byte(tc.payload), gw)
			var got *Rejection
			for i := range res.Rejected {
				if res.Rejected[i].Index == tc.index {
					got = &res.Rejected[i]
				}
			}
			if got == nil {
				t.Fatalf("no rejection at index %d; result %+v", tc.index, res)
			}
			if got.Code != tc.code || got.Field != tc.field {
				t.Errorf("got %s on %q (%s), want %s on %q", got.Code, got.Field, got.Reason, tc.code, tc.field)
			}
			if !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("reason %q does not say %q", got.Reason, tc.reason)
			}
			checkRejection(t, got)
			if tc.index == -1 && (len(res.Rejected) != 1 || len(res.Accepted) != 0) {
				t.Errorf("payload refusal must be the only outcome: %+v", res)
			}
		})
	}
}

// checkRejection asserts what holds for every rejection.
func checkRejection(tb testing.TB, r *Rejection) {
	tb.Helper()
	if r.Code == "" || !strings.HasPrefix(r.Code, "thingsee.") {
		tb.Errorf("rejection code %q is not a thingsee code", r.Code)
	}
	if r.Reason == "" || len(r.Reason) > 300 {
		tb.Errorf("reason %q: want 1..300 bytes, got %d", r.Reason, len(r.Reason))
	}
	if len(r.Tuid) > maxEchoTuid {
		tb.Errorf("rejection echoes a %d-byte tuid", len(r.Tuid))
	}
	for _, c := range r.Reason {
		if c < 0x20 || c == 0x7f {
			tb.Errorf("reason %q holds a control character", r.Reason)
			break
		}
	}
}

func TestThingseeValidateAccepts(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		payload string
		check   func(t *testing.T, m Message)
	}{
		{name: "typical weather", payload: weather(`"airp":101364.599,"lght":6,"tsmGw":"` + testGateway + `","deploymentGroupId":"prfi00samplegroup"`),
			check: func(t *testing.T, m Message) {
				if m.TsmID != 12100 || m.TsmEv != 10 || m.Tuid != testTuid || m.Gw != testGateway || !m.HasDeploymentGroup {
					t.Errorf("header not carried over: %+v", m)
				}
			}},
		{name: "threshold event with one property", payload: msg(12100, 9, `"temp":30.5`)},
		{name: "threshold event needs no required property", payload: msg(1110, 9, `"chrg":1`)},
		{name: "network disconnected without tsmTs", payload: `{"tsmId":1110,"tsmEv":18,"tsmTuid":"` + testTuid + `","batl":40}`,
			check: func(t *testing.T, m Message) {
				if m.HasTs || m.TsRaw != "" || m.TsmTs != 0 {
					t.Errorf("tsmTs should be absent: %+v", m)
				}
			}},
		{name: "old 2017 timestamp", payload: `{"tsmId":13100,"tsmEv":10,"tsmTs":1492603998,"tsmTuid":"` + testTuid + `","moveCount":7}`},
		{name: "fractional tsmTs kept exactly", payload: `{"tsmId":13100,"tsmEv":10,"tsmTs":1764273000.1230,"tsmTuid":"` + testTuid + `","moveCount":7}`,
			check: func(t *testing.T, m Message) {
				if !m.HasTs || m.TsRaw != "1764273000.1230" || m.TsmTs != 1764273000.123 {
					t.Errorf("TsRaw %q TsmTs %v, want the exact text and its value", m.TsRaw, m.TsmTs)
				}
			}},
		{name: "tsmTs within the skew", payload: `{"tsmId":13100,"tsmEv":10,"tsmTs":1764274199,"tsmTuid":"` + testTuid + `","moveCount":7}`},
		{name: "tsmTs exactly 2000-01-01", payload: `{"tsmId":13100,"tsmEv":10,"tsmTs":946684800,"tsmTuid":"` + testTuid + `","moveCount":7}`},
		{name: "integral fraction for an integer", payload: msg(13100, 10, `"moveCount":12.0`)},
		{name: "integral exponent for an integer", payload: `{"tsmId":1.21e4,"tsmEv":1E1,"tsmTs":1764273000,"tsmTuid":"` + testTuid + `","temp":1}`,
			check: func(t *testing.T, m Message) {
				if m.TsmID != 12100 || m.TsmEv != 10 {
					t.Errorf("TsmID %d TsmEv %d, want 12100 and 10", m.TsmID, m.TsmEv)
				}
			}},
		{name: "unknown id with any properties", payload: msg(17110, 31, `"profileId":2,"nested":{"a":[1,{"b":null}]}`)},
		{name: "header-only message of unknown id", payload: msg(1000, 0, ``)},
		{name: "1220 extra counter", payload: msg(1220, 10, `"nodeRole":3,"bufferDrops":12,"queue_overflow2":0.5`)},
		{name: "diagData as string and errorCause as number", payload: msg(1403, 29, `"diagData":"abc","errorCause":17,"errorType":"x"`)},
		{name: "resultReason as number", payload: msg(1301, 15, `"result":"fail","resultReason":3`)},
		{name: "heartbeats", payload: msg(11200, 10, `"slotInterval":60,"slotBitCount":32,`+heartbeats(3))},
		{name: "empty heartbeats", payload: msg(11200, 10, `"heartbeats":[]`)},
		{name: "11201 heartbeat change", payload: msg(11201, 10, `"tuid":"TSPR04ABC12345678","slotBits":255`)},
		{name: "distance 2D", payload: msg(17201, 10, `"dist":[[1,2,3,4],[0,0,0,0],[1.5,2,3,4000],[1,2,3,4]]`)},
		{name: "CO2 with status", payload: msg(24100, 10, `"carbonDioxide":412,"status":-1`)},
		{name: "lenient deploymentGroupId", payload: weather(`"deploymentGroupId":"foo"`)},
		{name: "surrounding whitespace", payload: "\n\t " + weather("") + " \r\n",
			check: func(t *testing.T, m Message) {
				if string(m.Raw) != weather("") {
					t.Errorf("Raw = %q, want the object without surrounding whitespace", m.Raw)
				}
			}},
		{name: "transaction response", payload: msg(1500, 31, `"transactionId":2147483647,"measurementInterval":10,"reportInterval":60`)},
		{name: "tsmGwTs and tsmAp", payload: weather(`"tsmGwTs":1764273001.5,"tsmAp":"ThingseeDemoApp"`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testValidator(tc.opts).Validate([]byte(tc.payload), testGateway)
			if len(res.Rejected) != 0 || len(res.Accepted) != 1 {
				t.Fatalf("want one accepted message, got %+v", res)
			}
			m := res.Accepted[0]
			if !json.Valid(m.Raw) || m.Index != 0 {
				t.Errorf("Raw %q Index %d: want valid JSON at index 0", m.Raw, m.Index)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

func TestThingseeValidateArrayKeepsElementsApart(t *testing.T) {
	good := weather("")
	payload := "[ " + good + " ,\n" + `{"tsmId":12100}` + ", 7, [1], " + msg(13100, 10, `"moveCount":1`) + "\t]"
	res := testValidator(Options{}).Validate([]byte(payload), testGateway)

	if len(res.Accepted) != 2 || res.Accepted[0].Index != 0 || res.Accepted[1].Index != 4 {
		t.Fatalf("accepted %+v, want indexes 0 and 4", res.Accepted)
	}
	if string(res.Accepted[0].Raw) != good {
		t.Errorf("Raw = %s, want the element's exact bytes %s", res.Accepted[0].Raw, good)
	}
	wantRejected := []struct {
		index int
		code  string
	}{{1, CodeFieldMissing}, {2, CodeNotObject}, {3, CodeNotObject}}
	if len(res.Rejected) != len(wantRejected) {
		t.Fatalf("rejected %+v, want %d", res.Rejected, len(wantRejected))
	}
	for i, w := range wantRejected {
		r := res.Rejected[i]
		if r.Index != w.index || r.Code != w.code {
			t.Errorf("rejection %d: got index %d %s, want %d %s", i, r.Index, r.Code, w.index, w.code)
		}
	}
	if string(res.Rejected[0].Raw) != `{"tsmId":12100}` || string(res.Rejected[1].Raw) != "7" {
		t.Errorf("rejected Raw %q and %q, want the elements' bytes", res.Rejected[0].Raw, res.Rejected[1].Raw)
	}
	if res.Rejected[0].TsmID != 12100 {
		t.Errorf("rejection TsmID = %d, want 12100", res.Rejected[0].TsmID)
	}

	// Raw is a copy: appending to one element or scribbling on the payload
	// buffer changes nothing else.
	buf := []byte(payload)
	res = testValidator(Options{}).Validate(buf, testGateway)
	_ = append(res.Accepted[0].Raw, "XXXXXXXX"...)
	for i := range buf {
		buf[i] = 'Z'
	}
	if string(res.Accepted[0].Raw) != good || !bytes.HasPrefix(res.Rejected[0].Raw, []byte(`{"tsmId":12100}`)) {
		t.Errorf("Raw aliases the payload or a neighbour: %q %q", res.Accepted[0].Raw, res.Rejected[0].Raw)
	}
}

func TestThingseeRejectionEchoesAreBounded(t *testing.T) {
	huge := strings.Repeat("\u00e9", 500) // 1000 bytes of a 2-byte rune
	tests := []struct {
		name    string
		payload string
		field   string
		tuid    string
	}{
		{name: "huge unknown key", payload: weather(`"` + huge + `":1`), tuid: testTuid},
		{name: "huge tuid", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + huge + `"}`, field: "tsmTuid"},
		{name: "huge gateway", payload: weather(`"tsmGw":"` + huge + `"`), field: "tsmGw", tuid: testTuid},
		{name: "control characters", payload: weather(`"tsmGw":"a\u0000\n\u001b[31m"`), field: "tsmGw", tuid: testTuid},
		{name: "huge number", payload: msg(12100, 10, `"temp":`+strings.Repeat("9", 1000)), field: "temp", tuid: testTuid},
		{name: "short malformed tuid is echoed", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"TSPOD6789"}`, field: "tsmTuid", tuid: "TSPOD6789"},
		{name: "33-byte malformed tuid is not", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"` + strings.Repeat("A", 33) + `"}`, field: "tsmTuid"},
		{name: "tuid with odd characters is not", payload: `{"tsmId":12100,"tsmEv":10,"tsmTs":1764273000,"tsmTuid":"a b"}`, field: "tsmTuid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testValidator(Options{}).Validate([]byte(tc.payload), testGateway)
			if len(res.Rejected) != 1 {
				t.Fatalf("want one rejection, got %+v", res)
			}
			r := res.Rejected[0]
			checkRejection(t, &r)
			if strings.Contains(r.Reason, strings.Repeat("\u00e9", 33)) || strings.Contains(r.Reason, strings.Repeat("9", 65)) {
				t.Errorf("reason echoes more than 64 bytes of input: %q", r.Reason)
			}
			if tc.field != "" && r.Field != tc.field {
				t.Errorf("Field = %q, want %q", r.Field, tc.field)
			}
			if len(r.Field) > 70 {
				t.Errorf("Field is %d bytes; unknown keys must be clipped", len(r.Field))
			}
			if r.Tuid != tc.tuid {
				t.Errorf("Tuid = %q, want %q", r.Tuid, tc.tuid)
			}
		})
	}
}

func TestThingseeReasonsStayShort(t *testing.T) {
	key := strings.Repeat(`\"`, 100) // 100 quote characters once decoded
	var payloads []string
	for id := range schemaTable {
		payloads = append(payloads, msg(id, 10, `"`+key+`":1`))
	}
	payloads = append(payloads,
		weather(`"`+key+`":1,"`+strings.ToLower(key)+`x":2,"`+key+`x":3`),
		weather(`"tsmGw":"`+key+`"`),
		msg(11200, 10, `"heartbeats":[{"`+key+`":1}]`),
		msg(1301, 10, `"result":"`+key+`"`),
	)
	longest := 0
	for _, p := range payloads {
		res := testValidator(Options{}).Validate([]byte(p), strings.Repeat("G", 500))
		if len(res.Rejected) != 1 {
			t.Fatalf("want one rejection for %s, got %+v", p, res)
		}
		checkRejection(t, &res.Rejected[0])
		longest = max(longest, len(res.Rejected[0].Reason))
	}
	t.Logf("longest reason: %d bytes", longest)
}

func TestThingseeOptionsDefaults(t *testing.T) {
	v := NewValidator(Options{})
	if v.skew != DefaultMaxFutureSkew || v.maxMessages != DefaultMaxMessages || v.maxMessageBytes != DefaultMaxMessageBytes || v.now == nil {
		t.Errorf("defaults not applied: %+v", v)
	}
	if v := NewValidator(Options{MaxFutureSkew: -time.Minute}); v.skew != 0 {
		t.Errorf("negative skew = %v, want 0", v.skew)
	}
	// The array limit is inclusive.
	arr := "[" + weather("") + "," + weather("") + "]"
	if res := testValidator(Options{MaxMessages: 2}).Validate([]byte(arr), testGateway); len(res.Accepted) != 2 {
		t.Errorf("2 messages with MaxMessages 2: %+v", res)
	}
	// The size limit is inclusive.
	one := weather("")
	if res := testValidator(Options{MaxMessageBytes: len(one)}).Validate([]byte(one), testGateway); len(res.Accepted) != 1 {
		t.Errorf("message of exactly MaxMessageBytes: %+v", res)
	}
}

func TestThingseeParseJSONInt(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
		st   intStatus
	}{
		{name: "plain", in: "12100", want: 12100},
		{name: "negative", in: "-5", want: -5},
		{name: "negative zero", in: "-0", want: 0},
		{name: "integral fraction", in: "12.000", want: 12},
		{name: "exponent", in: "1.21e4", want: 12100},
		{name: "negative exponent integral", in: "12100e-2", want: 121},
		{name: "zero with huge exponent", in: "0.0e999999999999", want: 0},
		{name: "fraction", in: "12.5", st: intNotIntegral},
		{name: "tiny fraction", in: "1.0000000000000000001", st: intNotIntegral},
		{name: "negative exponent fraction", in: "5e-1", st: intNotIntegral},
		{name: "huge negative exponent", in: "1e-999999999999", st: intNotIntegral},
		{name: "max int64", in: "9223372036854775807", want: 9223372036854775807},
		{name: "min int64", in: "-9223372036854775808", want: -9223372036854775808},
		{name: "beyond int64", in: "9223372036854775808", st: intOverflow},
		{name: "beyond int64 by exponent", in: "9.3e18", st: intOverflow},
		{name: "huge exponent", in: "1e999999999999", st: intOverflow},
		{name: "leading zeros in fraction form", in: "0.00123e5", want: 123},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, st := parseJSONInt(tc.in)
			if st != tc.st || (st == intOK && got != tc.want) {
				t.Errorf("parseJSONInt(%q) = %d, %d; want %d, %d", tc.in, got, st, tc.want, tc.st)
			}
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	v := NewValidator(Options{})
	single := []byte(`{"tsmId":12100,"tsmEv":10,"airp":101364.599,"lght":6,"temp":21.3,"humd":21.7,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678","tsmGw":"TSGW06DEV00000001","deploymentGroupId":"prfi00samplegroup"}`)
	parts := make([]string, 10)
	for i := range parts {
		parts[i] = string(single)
	}
	array := []byte("[" + strings.Join(parts, ",") + "]")
	for _, bc := range []struct {
		name    string
		payload []byte
		want    int
	}{
		{name: "single 12100", payload: single, want: 1},
		{name: "array of 10", payload: array, want: 10},
		// Hostile shapes are refused in one linear pass.
		{name: "hostile 5000 deep", payload: []byte(unknown(`"x":` + nestedArrays(5000))), want: 0},
		{name: "hostile payload 1000000 deep", payload: []byte(nestedArrays(1000000)), want: 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.payload)))
			for b.Loop() {
				if res := v.Validate(bc.payload, testGateway); len(res.Accepted) != bc.want {
					b.Fatalf("accepted %d, want %d: %+v", len(res.Accepted), bc.want, res.Rejected)
				}
			}
		})
	}
}
