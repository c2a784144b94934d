package agent_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/queue"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
)

// Run on a quiet machine (the agent and the node share the process; -cpu
// 1 puts both on one core, the agent's share is in the CPU profile):
//
//	go test -run '^$' -bench 'Frames' -benchtime 20000x -cpu 1,2 ./internal/gateway/agent/
//	go test -run '^$' -bench 'Drain100k' -benchtime 1x ./internal/gateway/agent/

// benchCloud is a node without rate limits.
func benchCloud(b *testing.B) *cloud {
	b.Helper()
	return newCloud(b, func(c *node.Config) {
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e9, 1<<30
	})
}

// benchFrames seals n frames of nodes nodes, round robin.
func benchFrames(b *testing.B, nw *network, nodes, n int) [][]byte {
	frames := make([][]byte, 0, n)
	for i := range n {
		frames = append(frames, nw.frame(b, 2, uint32(i%nodes)+1, 1, uint32(i/nodes)))
	}
	return frames
}

// pump sends frames, never more than window ahead of what the agent
// counted (so that the socket buffer does not overflow and the rate is
// the agent's).
func pump(b *testing.B, a *running, frames [][]byte, window uint64) {
	b.Helper()
	c, err := net.Dial("udp", a.MeshAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	base := a.Status().Mesh.Accepted
	for i, f := range frames {
		for wait := time.Now(); uint64(i) > a.Status().Mesh.Accepted-base+window; {
			if time.Since(wait) > 10*time.Second {
				b.Fatalf("frame %d: the agent took %d; frames were lost", i, a.Status().Mesh.Accepted-base)
			}
			time.Sleep(50 * time.Microsecond)
		}
		if _, err := c.Write(f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFrames measures mesh frames per second through the agent: to
// the queue (opened, checked, appended with the replay state; the cloud
// away), and to the cloud (also uploaded and acknowledged).
func BenchmarkFrames(b *testing.B) {
	for _, upload := range []bool{false, true} {
		name := "to-queue"
		if upload {
			name = "to-cloud"
		}
		b.Run(name, func(b *testing.B) {
			c := benchCloud(b)
			serial := "TSGW06BEN00000001"
			cfg := c.config(b, b.TempDir(), serial, c.token(b, serial))
			cfg.Logger = nil
			cfg.Queue = queue.DefaultOptions()
			cfg.Queue.MaxBytes = 1 << 30
			if !upload {
				cfg.MQTTAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b))
			}
			a := start(b, cfg)
			nw := newNetwork(b, 1000)
			nw.deliver(b, a.Agent)
			frames := benchFrames(b, nw, 1000, b.N)
			b.ResetTimer()
			begin := time.Now()
			pump(b, a, frames, 128)
			for wait := time.Now(); ; {
				if time.Since(wait) > 60*time.Second {
					b.Fatalf("not done after 60s: %+v", a.Status())
				}
				st := a.Status()
				if st.Mesh.Accepted == uint64(b.N) && (!upload && st.QueueDepth == b.N || upload && st.QueueDepth == 0) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "frames/s")
		})
	}
}

// BenchmarkDrain100k measures the drain of 100,000 queued messages after
// an outage: the time until the queue is empty, and the time until a
// frame received right after the reconnect (live data, behind the
// backlog) is uploaded.
func BenchmarkDrain100k(b *testing.B) {
	const backlog = 100_000
	for range b.N {
		b.StopTimer()
		c := benchCloud(b)
		serial := "TSGW06BEN00000002"
		dir := b.TempDir()
		cfg := c.config(b, dir, serial, c.token(b, serial))
		cfg.Logger = nil
		cfg.Queue = queue.DefaultOptions()
		cfg.Queue.MaxBytes = 1 << 30
		up := cfg.MQTTAddr
		cfg.MQTTAddr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b))
		a := start(b, cfg)
		nw := newNetwork(b, 1000)
		nw.deliver(b, a.Agent)
		frames := benchFrames(b, nw, 1000, backlog+1)
		pump(b, a, frames[:backlog], 128)
		for a.Status().QueueDepth != backlog {
			time.Sleep(time.Millisecond)
		}
		a.stop()

		cfg.MQTTAddr, cfg.EnrollToken = up, ""
		b.StartTimer()
		begin := time.Now()
		r := start(b, cfg)
		pump(b, r, frames[backlog:], 1)
		for r.Status().QueueDepth != 0 {
			time.Sleep(time.Millisecond)
		}
		drained := time.Since(begin)
		b.StopTimer()
		b.ReportMetric(drained.Seconds(), "drain-s")
		b.ReportMetric(backlog/drained.Seconds(), "msgs/s")
		// The live frame is the queue's last record: it is uploaded when
		// the queue is empty.
		b.ReportMetric(drained.Seconds(), "live-after-s")
		r.stop()
	}
}
