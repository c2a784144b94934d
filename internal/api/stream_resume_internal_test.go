package api

import (
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/thingsee"
	"github.com/iotransit/iotransit/receiver"
)

// TestStreamResumesAfterEveryReceiverKey checks that every message the node
// accepts can be resumed after by its receiver.Message.Key, as the receiver
// package documents ("It is also what the WebSocket stream resumes
// after"): ?after= must accept the key, whatever number text tsmTs had.
func TestStreamResumesAfterEveryReceiverKey(t *testing.T) {
	v := thingsee.NewValidator(thingsee.Options{Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	tests := []struct {
		name string
		ts   string
	}{
		{name: "integer", ts: "1700000000"},
		{name: "fraction", ts: "1700000000.5"},
		{name: "exponent", ts: "1.7e9"},
		{name: "upper-case exponent", ts: "17E8"},
		{name: "ten fractional digits", ts: "1700000000.1234567891"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload := `{"tsmId":99100,"tsmEv":10,"tsmTuid":"TSEN01ABC12345678","tsmTs":` + tc.ts + `}`
			res := v.Validate([]byte(payload), "TSGW06ACM00000001")
			if len(res.Accepted) != 1 {
				t.Fatalf("the node does not accept tsmTs %s (%+v): nothing to resume", tc.ts, res.Rejected)
			}
			body := res.Accepted[0].Normalize(thingsee.CloudFields{ReceivedAt: time.Unix(1_800_000_000, 0), Gateway: "TSGW06ACM00000001"})
			msgs, err := receiver.DecodeBatch(append(append([]byte("["), body...), ']'))
			if err != nil {
				t.Fatal(err)
			}
			key := msgs[0].Key()
			if !thingseeKey.MatchString(key) {
				t.Errorf("?after=%s (receiver.Message.Key of an accepted message) is refused as not a tsmTuid:tsmId:tsmTs key", key)
			}
		})
	}
}
