package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/node"
)

// TestServeKill9PipelinedKeepsAcknowledgedMessages is
// TestServeKill9KeepsAcknowledgedMessages with pipelined publishes: an
// MQTT 5 client keeps Receive Maximum publishes in flight (many workers
// over one connection), the server is killed with SIGKILL mid-stream,
// restarted, and killed again, three times; then every message whose
// PUBACK the client received is stored (stored ⊇ acked).
func TestServeKill9PipelinedKeepsAcknowledgedMessages(t *testing.T) {
	kill9Pipelined(t, startDevServer(t))
}

// TestServeKill9PipelinedFsyncAlways is
// TestServeKill9PipelinedKeepsAcknowledgedMessages with --fsync always,
// where the uploads of all connections are stored in shared atomic batches
// (group commit): a PUBACK still follows the commit of its batch, so
// stored ⊇ acked holds through the kills as well. Then, on the restarted
// server, a window of publishes in flight is stored in batches of more
// than one message (the node's metrics say so).
func TestServeKill9PipelinedFsyncAlways(t *testing.T) {
	s := kill9Pipelined(t, startDevServer(t, "--fsync", "always"))
	up := s.Uplink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 200
	pending := make([]*gateway.Pending, n)
	for i := range pending {
		msg := fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSPR04KIL00000002","moveCount":%d}`, time.Now().Add(-time.Hour).Unix()+int64(i), i)
		p, err := up.Send(ctx, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		pending[i] = p
	}
	for i, p := range pending {
		if res, err := p.Wait(ctx); err != nil || res.ReasonCode != 0 {
			t.Fatalf("publish %d: %v, reason 0x%02x", i, err, res.ReasonCode)
		}
	}
	text, err := s.Operator(t).Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sum, count float64
	for _, m := range regexp.MustCompile(`(?m)^iotransit_store_commit_batch_messages_(sum|count) (\S+)$`).FindAllStringSubmatch(string(text), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		if m[1] == "sum" {
			sum = v
		} else {
			count = v
		}
	}
	t.Logf("%v messages in %v commits", sum, count)
	if sum < n || sum <= count {
		t.Errorf("%v messages in %v commits: want all %d, in batches of more than one", sum, count, n)
	}
}

// kill9Pipelined is TestServeKill9PipelinedKeepsAcknowledgedMessages on the
// server s; it returns the server as restarted after the last kill.
func kill9Pipelined(t *testing.T, s server) server {
	t.Helper()
	const (
		rounds    = 3
		perRound  = 4000 // below the gateway's message burst (5000)
		killAfter = 300
		workers   = 64
	)
	base := time.Now().Add(-6 * time.Hour).Unix()
	acked := map[int]bool{}
	for round := range rounds {
		got := publishUntilKilled(t, s, round*perRound, perRound, killAfter, workers, base)
		_ = s.Cmd.Wait()
		if ws, ok := s.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: server did not die of SIGKILL: %v", round, s.Cmd.ProcessState)
		}
		if len(got) < killAfter {
			t.Fatalf("round %d: only %d publishes acknowledged before the kill", round, len(got))
		}
		t.Logf("round %d: %d publishes acknowledged before the connection died", round, len(got))
		for _, i := range got {
			acked[i] = true
		}
		s = s.restart(t)
	}
	stored := storedMoveCounts(t, s.DevServer)
	missing := 0
	for i := range acked {
		if !stored[i] {
			missing++
			if missing <= 10 {
				t.Errorf("message %d was acknowledged but is not stored", i)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged messages are not stored", missing, len(acked))
	}
	t.Logf("%d acknowledged, %d stored", len(acked), len(stored))
	return s
}

// lockedConn is a sync.Locker, which paho takes around the several writes
// of one packet: concurrent publishes would interleave their bytes
// otherwise.
type lockedConn struct {
	net.Conn
	sync.Mutex
}

// publishUntilKilled publishes messages first..first+n-1 from workers
// goroutines over one MQTT 5 connection of the dev gateway, kills the
// server with SIGKILL once killAfter are acknowledged, and returns the
// acknowledged ones once the connection is gone.
func publishUntilKilled(t *testing.T, s server, first, n, killAfter, workers int, base int64) []int {
	t.Helper()
	tlsCfg, err := gateway.TLSFiles(s.GatewayFile("cert.pem"), s.GatewayFile("key.pem"), s.GatewayFile("ca.pem"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", s.MQTT, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: conn}})
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(cctx, &paho.Connect{ClientID: node.DevGateway, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	next := make(chan int, n)
	for i := first; i < first+n; i++ {
		next <- i
	}
	close(next)
	var (
		mu       sync.Mutex
		acked    []int
		refused  []string
		firstErr error
		count    atomic.Int64
		kill     sync.Once
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				msg := fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSPR04KIL00000001","moveCount":%d}`, base+int64(i), i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := c.Publish(ctx, &paho.Publish{Topic: ingest.UpTopic(node.DevGateway), QoS: 1, Payload: []byte(msg)})
				cancel()
				if err != nil || res == nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("publish %d: %w", i, err)
					}
					mu.Unlock()
					return // the connection died (or never answered): not acknowledged
				}
				if res.ReasonCode != 0 {
					mu.Lock()
					refused = append(refused, fmt.Sprintf("publish %d: reason 0x%02x", i, res.ReasonCode))
					mu.Unlock()
					return
				}
				mu.Lock()
				acked = append(acked, i)
				mu.Unlock()
				if count.Add(1) == int64(killAfter) { // kill while the workers keep publishing
					kill.Do(func() { _ = s.Cmd.Process.Signal(syscall.SIGKILL) })
				}
			}
		})
	}
	wg.Wait()
	kill.Do(func() { _ = s.Cmd.Process.Signal(syscall.SIGKILL) }) // all sent before the count: kill anyway
	t.Logf("publishing ended with %v", firstErr)
	for _, r := range refused {
		t.Error(r)
	}
	return acked
}
