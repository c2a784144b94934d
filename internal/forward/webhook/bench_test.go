package webhook_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/iotransit/iotransit/internal/forward"
)

// BenchmarkDeliver sends batches of 100 typical messages (~200 bytes each)
// to a loopback HTTPS receiver over a kept-alive connection.
func BenchmarkDeliver(b *testing.B) {
	ca := newCA(b, "bench CA")
	secret := newSecret(b)
	rc := newReceiver(b, ca, receiverOpts{Discard: true})
	tg := newTarget(b, config(rc.URL, ca, secret))

	batch := &forward.Batch{ID: "batch_bench", Tenant: "acme", Integration: "hook", Attempt: 1}
	size := 0
	for i := range 100 {
		body := fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"airp":101364.599,"lght":6,"temp":%.1f,"humd":41.5,"tsmTs":%d,"tsmTuid":"TSEN01ABC%08d","tsmGw":"TSGW06ABC12345678","deploymentGroupId":"prfi00samplegroup"}`, 20+float64(i%50)/10, 1520416221+i, i)
		size += len(body)
		batch.Messages = append(batch.Messages, forward.Message{Seq: uint64(i + 1), Body: []byte(body)})
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := tg.Deliver(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch.Messages))/b.Elapsed().Seconds(), "msgs/s")
	if n := rc.conns.Load(); n != 1 {
		b.Errorf("%d connections, want 1 (keep-alive)", n)
	}
}
