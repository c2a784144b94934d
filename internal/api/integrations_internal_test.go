package api

import (
	"testing"

	"github.com/iotransit/iotransit/internal/forward"
)

// TestAPIDestinationComparesEachField: a change of where an integration
// delivers needs messages:read; the comparison must see every change of a
// field, also one that keeps the fields' concatenation (AWS client "a b"
// with topic "c" is not client "a" with topic "b c").
func TestAPIDestinationComparesEachField(t *testing.T) {
	aws := func(endpoint string, port int, clientID, topic string) forward.Integration {
		return forward.Integration{Type: forward.TypeAWS, AWS: &forward.AWSConfig{Endpoint: endpoint, Port: port, ClientID: clientID, Topic: topic}}
	}
	azure := func(host string, port int, device string) forward.Integration {
		return forward.Integration{Type: forward.TypeAzure, Azure: &forward.AzureConfig{HostName: host, Port: port, DeviceID: device}}
	}
	cases := []struct {
		name string
		a, b forward.Integration
		same bool
	}{
		{"aws: the same settings", aws("x.iot", 8883, "a b", "c"), aws("x.iot", 8883, "a b", "c"), true},
		{"aws: a space moved from the client id to the topic", aws("x.iot", 8883, "a b", "c"), aws("x.iot", 8883, "a", "b c"), false},
		{"aws: another topic", aws("x.iot", 8883, "a", "c"), aws("x.iot", 8883, "a", "d"), false},
		{"aws: another client", aws("x.iot", 8883, "a", "c"), aws("x.iot", 8883, "b", "c"), false},
		{"aws: another port", aws("x.iot", 8883, "a", "c"), aws("x.iot", 443, "a", "c"), false},
		{"azure: another device", azure("h.net", 8883, "d1"), azure("h.net", 8883, "d2"), false},
		{"azure: another port", azure("h.net", 8883, "d1"), azure("h.net", 443, "d1"), false},
		{"azure: the same settings", azure("h.net", 8883, "d1"), azure("h.net", 8883, "d1"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if same := destinationOf(tc.a) == destinationOf(tc.b); same != tc.same {
				t.Errorf("same destination: %v, want %v (%+v and %+v)", same, tc.same, destinationOf(tc.a), destinationOf(tc.b))
			}
		})
	}
}
