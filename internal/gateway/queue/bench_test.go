package queue

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/iotransit/iotransit/internal/testutil"
)

// Run briefly (the machine is shared):
//
//	go test -run '^$' -bench Append -benchtime 2s ./internal/gateway/queue/
//	go test -run '^$' -bench Drain -benchtime 1x ./internal/gateway/queue/

// benchOptions bound nothing the benchmarks reach.
func benchOptions() Options {
	o := DefaultOptions()
	o.MaxBytes = 1 << 30
	return o
}

// benchMessage is a realistic Thingsee message (about 100 bytes).
func benchMessage(i int) []byte {
	return []byte(testutil.Thingsee(fmt.Sprintf("TSPR04E2O9%07d", i%1000), 1_700_000_000_000+int64(i), 21.5))
}

// BenchmarkQueueAppend measures durable appends: one caller with one
// message a call (a commit each), many concurrent callers (group commit),
// and one caller with batches.
func BenchmarkQueueAppend(b *testing.B) {
	msg := benchMessage(1)
	b.Run("one-caller-one-message", func(b *testing.B) {
		q := openT(b, filepath.Join(b.TempDir(), "q.db"), newKey(b), benchOptions())
		start := q.Stats().Commits
		b.ResetTimer()
		for b.Loop() {
			if _, err := q.Append([][]byte{msg}, nil); err != nil {
				b.Fatal(err)
			}
		}
		reportAppends(b, q, start)
	})
	b.Run("64-callers-one-message", func(b *testing.B) {
		q := openT(b, filepath.Join(b.TempDir(), "q.db"), newKey(b), benchOptions())
		start := q.Stats().Commits
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := q.Append([][]byte{msg}, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportAppends(b, q, start)
	})
	b.Run("one-caller-batch-64", func(b *testing.B) {
		q := openT(b, filepath.Join(b.TempDir(), "q.db"), newKey(b), benchOptions())
		start := q.Stats().Commits
		batch := make([][]byte, 64)
		for i := range batch {
			batch[i] = msg
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := q.Append(batch, nil); err != nil {
				b.Fatal(err)
			}
		}
		reportAppends(b, q, start)
	})
}

// reportAppends reports messages per second and commits per message.
func reportAppends(b *testing.B, q *Queue, commitsBefore uint64) {
	b.StopTimer()
	s := q.Stats()
	b.ReportMetric(float64(s.Appended)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(s.Commits-commitsBefore)/float64(s.Appended), "commits/msg")
}

// BenchmarkQueueDrain100k fills a queue with 100,000 messages (untimed),
// then drains it as the uplink would: Read 500, Ack them, until empty.
// It reports the drain rate, the file's bytes per message and the
// process's resident memory full and drained.
func BenchmarkQueueDrain100k(b *testing.B) {
	const n, fill, batch = 100_000, 1000, 500
	b.StopTimer()
	for range b.N {
		path := filepath.Join(b.TempDir(), "q.db")
		q, err := Open(path, staticKey(newKey(b)), benchOptions())
		if err != nil {
			b.Fatal(err)
		}
		reportMemory(b, "empty")
		for i := 0; i < n; i += fill {
			m := make([][]byte, fill)
			for j := range m {
				m[j] = benchMessage(i + j)
			}
			if _, err := q.Append(m, nil); err != nil {
				b.Fatal(err)
			}
		}
		fi, _ := os.Stat(path)
		var used int64
		q.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
		b.ReportMetric(float64(fi.Size())/n, "file-B/msg")
		b.ReportMetric(float64(used)/n, "pages-B/msg")
		b.ReportMetric(float64(len(benchMessage(0))), "msg-B")
		reportMemory(b, "full")

		b.StartTimer()
		start := time.Now()
		after := uint64(0)
		for {
			recs, err := q.Read(after, batch)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			after = recs[len(recs)-1].ID
			if err := q.Ack(after); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(n/time.Since(start).Seconds(), "drained-msgs/s")
		b.StopTimer()
		if s := q.Stats(); s.Depth != 0 || s.Acked != n {
			b.Fatalf("drained %+v", s)
		}
		reportMemory(b, "drained")
		q.Close()
	}
}

// reportMemory reports the Go heap in use and the process's resident
// memory, split into anonymous and file-backed (bbolt's map), in MiB.
func reportMemory(b *testing.B, when string) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB-"+when)
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		if k != "RssAnon" && k != "RssFile" {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		b.ReportMetric(kb/1024, strings.ToLower(k)+"-MiB-"+when)
	}
}
