package hostile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Names of the hostile-payload replay (prefixed: the package holds every
// area's replay).
const (
	payloadTenant  = "hostile-payload"
	payloadGateway = "TSGW06HOS00000001"
	payloadSensor  = "TSEN01HOS00000001"
)

// payloadHeader is a valid header of a tsmId without a schema (99100), whose
// body only the structural limits check.
const payloadHeader = `{"tsmId":99100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"` + payloadSensor + `"`

// goJSONText is text of encoding/json's syntax errors that must never reach
// a gateway or a tenant: reasons are our own sentences.
var goJSONText = []string{"invalid character", "looking for", "in literal", "unexpected end of JSON", "exceeded max depth", "ï"}

// TestHostilePayloadsAreRefused replays finding 6 of issue 8 (hostile
// payloads in messages of a tsmId without a schema were stored and
// forwarded verbatim) and the PUBACK half of finding 7 (reason strings
// echoed Go's JSON errors and showed a byte order mark as 'ï'). Each
// payload goes through a real MQTT 5 client to a real node with a webhook
// integration: it must get PUBACK 0x99 whose reason names its code in our
// own words, the same reason on down/errors and in the tenant's rejected
// messages, and nothing of it may be stored or forwarded.
func TestHostilePayloadsAreRefused(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.Ingest.MsgBurst = 1000
		c.Ingest.MaxPayload = 4 << 20 // room for a payload nested 1,000,000 deep
	})
	api := nodetest.NewAPI(t, n)
	rcv := tu.NewReceiver(t)
	cert := nodetest.Gateway(t, n, payloadTenant, payloadGateway)
	bg := context.Background()
	if _, err := api.Client.CreateIntegration(bg, payloadTenant, client.Integration{Name: "receiver", Type: "webhook",
		Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM}}); err != nil {
		t.Fatal(err)
	}
	reports := make(chan []byte, 64)
	up, err := nodetest.Dial(t, n, cert, payloadGateway, func(c *gateway.UplinkConfig) {
		c.OnReport = func(b []byte) { reports <- b }
	})
	if err != nil {
		t.Fatal(err)
	}

	props := make([]string, 300)
	for i := range props {
		props[i] = fmt.Sprintf(`"k%03d":%d`, i, i)
	}
	cases := []struct {
		name    string
		payload string
		code    string
		reason  string // a substring of the reason
	}{
		{name: "nested 5000 deep", payload: payloadHeader + `,"x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`,
			code: "thingsee.too_deep", reason: "x: nesting is deeper than the limit of 32 levels"},
		{name: "payload nested 1000000 deep", payload: strings.Repeat("[", 1000000) + strings.Repeat("]", 1000000),
			code: "thingsee.too_deep", reason: "the payload is nested deeper than the limit of 32 levels"},
		{name: "lone surrogate key", payload: payloadHeader + `,"\ud800":1}`,
			code: "thingsee.key_invalid", reason: `unpaired UTF-16 surrogate \ud800`},
		{name: "NUL in a key", payload: payloadHeader + `,"a\u0000b":1}`,
			code: "thingsee.key_invalid", reason: `the key "a?b" holds the control character U+0000`},
		{name: "escape sequence in a key", payload: payloadHeader + `,"x":{"a\u001b[31mb":1}}`,
			code: "thingsee.key_invalid", reason: `x: the key "a?[31mb" holds the control character U+001B`},
		{name: "right-to-left override in a key", payload: payloadHeader + `,"a\u202eb":1}`,
			code: "thingsee.key_invalid", reason: `holds the format character U+202E`},
		{name: "lone surrogate value", payload: payloadHeader + `,"x":["ok","\udc00"]}`,
			code: "thingsee.string_invalid", reason: `x: a string holds an unpaired UTF-16 surrogate \udc00`},
		{name: "NUL in a value", payload: payloadHeader + `,"x":"a\u0000b"}`,
			code: "thingsee.string_invalid", reason: `x: a string holds a NUL character`},
		{name: "300 properties", payload: payloadHeader + "," + strings.Join(props, ",") + `}`,
			code: "thingsee.too_many_keys", reason: "the message holds more than 256 keys, the limit per object"},
		{name: "long key", payload: payloadHeader + `,"` + strings.Repeat("k", 200) + `":1}`,
			code: "thingsee.key_too_long", reason: "is 200 bytes long; the limit is 128 bytes"},
		{name: "long string", payload: payloadHeader + `,"x":"` + strings.Repeat("s", 5000) + `"}`,
			code: "thingsee.string_too_long", reason: "x: a string is 5000 bytes long; the limit is 4096 bytes"},
		{name: "long number", payload: payloadHeader + `,"x":` + strings.Repeat("9", 100) + `}`,
			code: "thingsee.number_too_long", reason: "x: a number is 100 characters long; the limit is 64"},
		{name: "long array", payload: payloadHeader + `,"x":[` + strings.Repeat("0,", 2000) + `0]}`,
			code: "thingsee.array_too_long", reason: "x: an array holds more than 1024 elements, the limit per array"},
		{name: "byte order mark", payload: "\xef\xbb\xbf" + tu.Thingsee(payloadSensor, 1700000000, 20),
			code: "thingsee.payload_invalid", reason: "the payload starts with a UTF-8 byte order mark"},
		{name: "syntax error", payload: `{"tsmId":x}`,
			code: "thingsee.payload_invalid", reason: "the payload is not JSON: unexpected character 'x' at byte 10"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := up.Publish(bg, []byte(tc.payload), 1)
			if err != nil {
				t.Fatal(err)
			}
			if res.ReasonCode != 0x99 || !strings.Contains(res.Reason, "["+tc.code+"]") || !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("PUBACK 0x%02x %q, want 0x99 with %q and [%s]", res.ReasonCode, res.Reason, tc.reason, tc.code)
			}
			checkNoGoJSONText(t, "PUBACK reason", res.Reason)
			select {
			case b := <-reports:
				var rep struct {
					Rejected []struct{ Code, Reason string }
				}
				if err := json.Unmarshal(b, &rep); err != nil {
					t.Fatalf("report %s: %v", b, err)
				}
				if len(rep.Rejected) != 1 || rep.Rejected[0].Code != tc.code || !strings.Contains(rep.Rejected[0].Reason, tc.reason) {
					t.Errorf("down/errors report %s, want one %s with %q", b, tc.code, tc.reason)
				}
				for _, r := range rep.Rejected {
					checkNoGoJSONText(t, "report reason", r.Reason)
				}
			case <-time.After(5 * time.Second * tu.Slowdown()):
				t.Error("no report on down/errors")
			}
		})
	}

	// A valid message after them: once it is forwarded, everything before it
	// has had its chance to be.
	valid := tu.Thingsee(payloadSensor, 1700000001, 21)
	if res, err := up.Publish(bg, []byte(valid), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("valid message: PUBACK 0x%02x %q, %v", res.ReasonCode, res.Reason, err)
	}
	var forwarded []json.RawMessage
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		forwarded = forwarded[:0]
		for _, d := range rcv.Got() {
			var batch []json.RawMessage
			if err := json.Unmarshal(d.Body, &batch); err != nil {
				return fmt.Errorf("delivery %.200s: %v", d.Body, err)
			}
			forwarded = append(forwarded, batch...)
		}
		if len(forwarded) == 0 {
			return fmt.Errorf("the valid message was not forwarded yet")
		}
		return nil
	})
	if len(forwarded) != 1 || !strings.Contains(string(forwarded[0]), `"temp":21`) {
		t.Errorf("forwarded %d messages, want only the valid one: %.300s", len(forwarded), forwarded)
	}
	if msgs := api.Messages(payloadTenant, 100); len(msgs) != 1 {
		t.Errorf("stored %d messages, want only the valid one", len(msgs))
	}

	rejected := api.Rejected(payloadTenant, 100)
	if len(rejected) != len(cases) {
		t.Errorf("the tenant has %d rejected messages, want %d", len(rejected), len(cases))
	}
	for _, r := range rejected {
		checkNoGoJSONText(t, "rejected message", r.Reason)
		// A message refused for its structure is shown as text: nesting
		// it in the listing would hand the hostile shape to the tenant's
		// own tools (deep nesting, lone surrogates in keys).
		if thingsee.Structural(r.Code) && (len(r.Message) > 0 || r.Payload == "" && r.PayloadBase64 == "") {
			t.Errorf("rejected %s is listed as a nested message (%d bytes), want its payload as text", r.Code, len(r.Message))
		}
	}
	for _, tc := range cases {
		found := false
		for _, r := range rejected {
			found = found || r.Code == tc.code && strings.Contains(r.Reason, tc.reason)
		}
		if !found {
			t.Errorf("%s: no rejected message with %s and %q", tc.name, tc.code, tc.reason)
		}
	}
}

// checkNoGoJSONText fails when a reason shows encoding/json's error text.
func checkNoGoJSONText(t *testing.T, where, reason string) {
	t.Helper()
	for _, s := range goJSONText {
		if strings.Contains(reason, s) {
			t.Errorf("%s %q holds Go's JSON error text %q", where, reason, s)
		}
	}
}
