package api

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// TestAPIDecodeRefusesDuplicateKeys: a body that names a member twice (at
// any depth, or in two spellings that the decoder would both take for one
// field) is refused with a sentence naming the key, instead of the last
// value silently winning.
func TestAPIDecodeRefusesDuplicateKeys(t *testing.T) {
	cases := []struct {
		name, body string
		wantErr    string // "" accepts
	}{
		{"distinct keys", `{"serial":"TSGW06ACM00000001","labels":{"a":"1","b":"2"}}`, ""},
		{"same key in sibling objects", `{"serial":"TSGW06ACM00000001","labels":{"a":"1"}}`, ""},
		{"top-level duplicate", `{"serial":"TSGW06ACM00000001","serial":"TSGW06ACM00000002"}`, `duplicate key "serial"`},
		{"nested duplicate", `{"serial":"TSGW06ACM00000001","labels":{"a":"1","a":"2"}}`, `duplicate key "a"`},
		{"duplicate in another spelling", `{"serial":"TSGW06ACM00000001","Serial":"TSGW06ACM00000002"}`, `duplicate key "Serial"`},
		{"duplicate by Unicode case folding", `{"serial":"TSGW06ACM00000001","ſerial":"TSGW06ACM00000002"}`, `duplicate key "ſerial"`},
		{"escaped duplicate", `{"serial":"TSGW06ACM00000001","\u0073erial":"TSGW06ACM00000002"}`, `duplicate key "serial"`},
		{"duplicate after a nested object", `{"labels":{"x":"1"},"serial":"A","labels":{}}`, `duplicate key "labels"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/x", bytes.NewReader([]byte(tc.body)))
			r.Header.Set("Content-Type", "application/json")
			var v client.RegisterGatewayRequest
			err := decodeJSON(httptest.NewRecorder(), r, 4096, &v, false)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted %s as %+v", tc.body, v)
			case tc.wantErr != "":
				if !ErrJSON.Is(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("refusal %v, want api.json_invalid with %q", err, tc.wantErr)
				}
			}
		})
	}
}
