package store

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestParseAck reads each kind of answer JetStream gives to a publish;
// anything not recognisably a success is a failure.
func TestParseAck(t *testing.T) {
	tests := []struct {
		name      string
		data      string
		status    string
		duplicate bool
		fails     bool
		apiCode   jetstream.ErrorCode
	}{
		{name: "stored", data: `{"stream":"MSG_acme","seq":42}`},
		{name: "stored with domain", data: `{"stream":"MSG_acme","domain":"hub","seq":42}`},
		{name: "duplicate as the stream writes it", data: `{"stream":"MSG_acme","seq":42,"duplicate": true}`, duplicate: true},
		{name: "duplicate as JSON encodes it", data: `{"stream":"MSG_acme","seq":42,"duplicate":true}`, duplicate: true},
		{name: "duplicate false", data: `{"stream":"MSG_acme","seq":42,"duplicate":false}`},
		{name: "wrong expected stream", data: `{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`, fails: true, apiCode: 10060},
		{name: "store failed", data: `{"stream":"MSG_acme","error":{"code":503,"err_code":10077,"description":"resource limits exceeded"}}`, fails: true, apiCode: 10077},
		{name: "no stream", status: "503", fails: true},
		{name: "empty", fails: true},
		{name: "not an ack", data: `hello`, fails: true},
		{name: "unreadable error", data: `{"error":`, fails: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &nats.Msg{Data: []byte(tc.data), Header: nats.Header{}}
			if tc.status != "" {
				m.Header.Set("Status", tc.status)
			}
			dup, err := parseAck(m)
			if (err != nil) != tc.fails {
				t.Fatalf("err %v, want failure %v", err, tc.fails)
			}
			if dup != tc.duplicate {
				t.Errorf("duplicate %v, want %v", dup, tc.duplicate)
			}
			if tc.apiCode != 0 {
				var api *jetstream.APIError
				if !errors.As(err, &api) || api.ErrorCode != tc.apiCode {
					t.Errorf("err %v, want API error %d", err, tc.apiCode)
				}
			}
		})
	}
}
