package store_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/store"
)

// benchBody is a normalised 12100 message of the size gateways send.
const benchBody = `{"tsmId":12100,"tsmEv":10,"airp":101364.599,"lght":6,"temp":21.3,"humd":21.7,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678","tsmGw":"TSGW06DEV00000001","deploymentGroupId":"prfi00samplegroup","tsmCloudTs":1764273600.123}`

// BenchmarkAppend is the persist step of the ingest (issue 11): seal,
// publish and wait for JetStream's acknowledgement, against an embedded
// JetStream with the default fsync, for an upload of one message and of
// ten. Every record has a new content id, so each one is stored; Append
// does not keep the records, so they and their body are reused.
func BenchmarkAppend(b *testing.B) {
	s, _ := newStore(b)
	ctx := context.Background()
	seq := 0
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("%d per upload", n), func(b *testing.B) {
			recs := make([]store.Record, n)
			for i := range recs {
				recs[i] = store.Record{Gateway: "TSGW06DEV00000001", Tuid: "TSEN01ABC12345678", TsmID: 12100,
					ReceivedAt: time.Unix(1764273600, 0), Body: []byte(benchBody)}
			}
			b.ReportAllocs()
			b.SetBytes(int64(n * len(benchBody)))
			for b.Loop() {
				for i := range recs {
					seq++
					recs[i].ID = strconv.Itoa(seq) // the benchmark's one allocation per record
				}
				res, err := s.Append(ctx, "acme", recs)
				if err != nil {
					b.Fatal(err)
				}
				if res.Stored != n {
					b.Fatalf("stored %d of %d (%d duplicates)", res.Stored, n, res.Duplicates)
				}
			}
		})
	}
}

// BenchmarkAppendGroupCommit is the persist step under --fsync always: many
// goroutines (16 per GOMAXPROCS, as many connections' uploads would) each
// append one record and wait, against an embedded JetStream that fsyncs
// every write, with group commit. Concurrent appends share a commit (one
// atomic batch, a fixed number of fsyncs); batch/commit reports how many did
// on average.
func BenchmarkAppendGroupCommit(b *testing.B) {
	s, _, _ := syncAlways(b, "")
	ctx := context.Background()
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		r := store.Record{Gateway: "TSGW06DEV00000001", Tuid: "TSEN01ABC12345678", TsmID: 12100,
			ReceivedAt: time.Unix(1764273600, 0), Body: []byte(benchBody)}
		for pb.Next() {
			r.ID = strconv.FormatInt(seq.Add(1), 10)
			res, err := s.Append(ctx, "acme", []store.Record{r})
			if err != nil {
				b.Error(err)
				return
			}
			if res.Stored != 1 {
				b.Errorf("stored %d of 1 (%d duplicates)", res.Stored, res.Duplicates)
				return
			}
		}
	})
	if count, messages, _ := commits(b, s); count > 0 {
		b.ReportMetric(float64(messages)/float64(count), "batch/commit")
	}
}
