package thingsee

import (
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
	m := hotAccepted(t)
	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{name: "validate", max: 4, f: func() { v.Validate(payload, testGateway) }},
		{name: "normalize", max: 2, f: func() { m.Normalize(hotCloud) }},
		{name: "content id", max: 2, f: func() { m.ContentID(testGateway) }},
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
