package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/securefile"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestMeasureAgent measures the gateway agent (cmd/iotransit-gateway) as a
// process of its own,
// from outside (its CPU from /proc/PID/stat, its memory from
// /proc/PID/status), beside a `serve --dev` process and mesh-sim's nodes in
// this process:
//
//  1. live: N mesh nodes (default 1,000) send R frames/s (default 2,000)
//     for D (default 20 s): the agent's CPU per frame and resident memory;
//  2. outage: the server stops, the nodes send M frames (default 100,000),
//     which the agent queues (encrypted, on disk): its memory with the full
//     queue;
//  3. drain: the server starts again while one node keeps sending 20
//     frames/s: how long until the queue is drained (every message stored)
//     and until a live frame sent after the restart is stored.
//
// It is a measurement, not a test: run it on a quiet machine with
//
//	IOTRANSIT_MEASURE_AGENT=1 go test ./cmd/iotransit -run TestMeasureAgent -v -count=1
//
// (IOTRANSIT_MEASURE_NODES, _RATE, _SECONDS and _OUTAGE change the sizes).
func TestMeasureAgent(t *testing.T) {
	if os.Getenv("IOTRANSIT_MEASURE_AGENT") == "" {
		t.Skip("a measurement; run with IOTRANSIT_MEASURE_AGENT=1 on a quiet machine")
	}
	nodes, rate := envInt(t, "IOTRANSIT_MEASURE_NODES", 1000), envInt(t, "IOTRANSIT_MEASURE_RATE", 2000)
	seconds, outage := envInt(t, "IOTRANSIT_MEASURE_SECONDS", 20), envInt(t, "IOTRANSIT_MEASURE_OUTAGE", 100_000)
	ctx := context.Background()
	bin, gw := nodetest.BuildBinary(t), nodetest.BuildCommand(t, "iotransit-gateway")
	for _, b := range []string{bin, gw} {
		if fi, err := os.Stat(b); err == nil {
			t.Logf("binary %s: %.1f MiB", filepath.Base(b), float64(fi.Size())/(1<<20))
		}
	}
	srv := nodetest.StartDevServer(t, bin, "warn", "--msg-rate", "1000000", "--msg-burst", "1000000")
	op := srv.Operator(t)

	// The gateway, its token, the mesh network and its nodes, as an
	// operator makes them.
	const serial = "TSGW06MEA00000001"
	token := srv.EnrollmentToken(t, serial)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := securefile.WriteAtomic(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nodes 1..nodes send the load; node nodes+1 sends the live frames
	// during the drain (a node of its own: another run of an existing
	// node with a fresh boot counter would be an older boot, dropped).
	keyFile, err := demoMesh(ctx, op, filepath.Join(dir, "mesh"), nodes+1)
	if err != nil {
		t.Fatal(err)
	}
	meshAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	out := &testutil.SyncBuffer{}
	// The agent as it ships on a gateway: its own binary (iotransit gateway
	// run is the same code in the cloud's binary).
	agentCmd := exec.Command(gw, "--data-dir", filepath.Join(dir, "agent"), "--server", "https://"+srv.API,
		"--mqtt", srv.MQTT, "--ca", srv.GatewayFile("ca.pem"), "--serial", serial, "--enroll-token-file", tokenFile,
		"--mesh-addr", meshAddr, "--queue-max-bytes", strconv.Itoa(256<<20), "--log-level", "warn")
	agentCmd.Stdout, agentCmd.Stderr = out, out
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agentCmd.Process.Kill(); _ = agentCmd.Wait() })
	pid := agentCmd.Process.Pid
	// Ready when the cloud shows its status (sent after the connect; the
	// keys and nodes follow it at once).
	testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
		g, err := op.GetGateway(ctx, node.DevTenant, serial)
		if err != nil {
			return err
		}
		if g.LastSeen == nil {
			return fmt.Errorf("no status yet; agent output:\n%s", out)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // the key and node deliveries
	stored := func() float64 { return storedMessages(t, op) }

	// 1. Live.
	base := stored()
	cpu0, wall0 := procCPU(t, pid), time.Now()
	sim := meshSimConfig{gateway: meshAddr, keyFile: keyFile, nodes: nodes, firstNode: 1, rate: float64(rate), duration: time.Duration(seconds) * time.Second}
	rep, err := runMeshSim(ctx, sim, func(string, ...any) {})
	if err != nil || rep.SendErrors > 0 {
		t.Fatalf("mesh-sim: %v, %d send errors", err, rep.SendErrors)
	}
	testutil.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
		if got := stored() - base; got < float64(rep.Good) {
			g, _ := op.GetGateway(ctx, node.DevTenant, serial)
			return fmt.Errorf("%.0f of %d stored; the gateway's last status: %+v", got, rep.Good, g)
		}
		return nil
	})
	cpu, wall := procCPU(t, pid)-cpu0, time.Since(wall0)
	mem := procMem(t, pid)
	t.Logf("live: %d nodes, %d frames in %s (%.0f/s): agent CPU %.2f s = %.1f µs per frame (%.1f%% of a core); RSS %s",
		nodes, rep.Good, wall.Round(time.Millisecond), float64(rep.Good)/wall.Seconds(), cpu, cpu/float64(rep.Good)*1e6, cpu/wall.Seconds()*100, mem)

	// 2. Outage: the queue fills.
	if err := srv.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Logf("server stop: %v", err)
	}
	sim.duration = time.Duration(float64(outage) / float64(rate) * float64(time.Second))
	rep, err = runMeshSim(ctx, sim, func(string, ...any) {})
	if err != nil || rep.SendErrors > 0 {
		t.Fatalf("mesh-sim: %v, %d send errors", err, rep.SendErrors)
	}
	queued := rep.Good
	time.Sleep(2 * time.Second) // the last group commit
	t.Logf("outage: %d frames queued; RSS with the full queue %s; queue file %s", queued, procMem(t, pid), fileSize(filepath.Join(dir, "agent", "queue.db")))

	// 3. Drain, with one node sending live frames.
	liveCtx, stopLive := context.WithCancel(ctx)
	defer stopLive()
	live := meshSimConfig{gateway: meshAddr, keyFile: keyFile, stateDir: filepath.Join(dir, "live"), nodes: 1, firstNode: uint(nodes + 1), rate: 20, duration: 10 * time.Minute}
	if err := os.MkdirAll(live.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	srv = srv.Restart(t)
	op = srv.Operator(t)
	restart := time.Now()
	go func() { _, _ = runMeshSim(liveCtx, live, func(string, ...any) {}) }()
	cpu0 = procCPU(t, pid)
	liveTuid := fmt.Sprintf("%sMSH%08d", meshKinds[0].model, nodes+1)
	var reconnected, drained, liveFlows time.Duration
	testutil.Eventually(t, 5*time.Minute, 50*time.Millisecond, func() error {
		if liveFlows == 0 {
			page, err := op.ListMessages(ctx, node.DevTenant, client.MessageQuery{TsmTuid: liveTuid, Limit: 1})
			if err == nil && len(page.Items) > 0 && page.Items[0].ReceivedAt.After(restart) && messageTs(page.Items[0]) >= restart.Unix() {
				liveFlows = time.Since(restart)
			}
		}
		n := stored()
		if reconnected == 0 && n > 0 {
			reconnected = time.Since(restart)
		}
		if drained == 0 && n >= float64(queued) {
			drained = time.Since(restart)
		}
		if drained == 0 || liveFlows == 0 {
			return fmt.Errorf("drained after %s, live after %s; %.0f of %d stored; agent output:\n%s", drained, liveFlows, stored(), queued, out)
		}
		return nil
	})
	cpu = procCPU(t, pid) - cpu0
	t.Logf("drain: the first message stored %s after the server's restart (the agent's reconnect backoff), all %d %s after it (%.0f/s; agent CPU %.1f µs per message); a live frame sent after the restart stored %s after the restart; RSS %s",
		reconnected.Round(time.Millisecond), queued, (drained - reconnected).Round(time.Millisecond), float64(queued)/(drained-reconnected).Seconds(),
		cpu/float64(queued)*1e6, liveFlows.Round(time.Millisecond), procMem(t, pid))
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// storedMessages is the server's count of messages it took (its metrics):
// stored, or found stored already (mesh-sim's nodes may send one message
// twice within a second, which the cloud keeps once).
func storedMessages(t *testing.T, op *client.Client) float64 {
	t.Helper()
	b, err := op.Metrics(context.Background())
	if err != nil {
		return -1
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		for _, outcome := range []string{"stored", "duplicate"} {
			if v, ok := strings.CutPrefix(line, `iotransit_ingest_messages_total{outcome="`+outcome+`"} `); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				sum += f
			}
		}
	}
	return sum
}

// messageTs is a stored message's tsmTs.
func messageTs(m client.Message) int64 {
	var v struct {
		TsmTs int64 `json:"tsmTs"`
	}
	_ = json.Unmarshal(m.Message, &v)
	return v.TsmTs
}

// procCPU is the CPU seconds (user + system) pid used so far.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// procMem is pid's resident memory: now, peak, and its anonymous part.
func procMem(t *testing.T, pid int) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := map[string]string{}
	for s := bufio.NewScanner(f); s.Scan(); {
		if k, rest, ok := strings.Cut(s.Text(), ":"); ok {
			v[k] = strings.TrimSpace(rest)
		}
	}
	return fmt.Sprintf("%s (peak %s, anonymous %s, file-backed %s)", v["VmRSS"], v["VmHWM"], v["RssAnon"], v["RssFile"])
}

func fileSize(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.1f MiB", float64(fi.Size())/(1<<20))
}
