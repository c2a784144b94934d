package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// buildBinary builds the iotransit binary once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iotransit")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", tu.FreePort(t))
}

// syncBuffer is a buffer the process's output copier writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// server is an iotransit serve process.
type server struct {
	cmd       *exec.Cmd
	out       *syncBuffer
	bin       string
	dir, mqtt string
	api       string
}

// startDevServer builds the binary and starts `iotransit serve --dev` on a
// new data directory and free ports (not in -short mode).
func startDevServer(t *testing.T) *server {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	return startServer(t, buildBinary(t), t.TempDir(), freeAddr(t), freeAddr(t))
}

// restart starts the server again on its data directory and ports.
func (s *server) restart(t *testing.T) *server {
	t.Helper()
	return startServer(t, s.bin, s.dir, s.mqtt, s.api)
}

func startServer(t *testing.T, bin, dir, mqttAddr, apiAddr string) *server {
	t.Helper()
	s := &server{bin: bin, dir: dir, mqtt: mqttAddr, api: apiAddr, out: &syncBuffer{}}
	s.cmd = exec.Command(bin, "serve", "--dev", "--data-dir", dir, "--mqtt-addr", mqttAddr, "--api-addr", apiAddr, "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
	})
	tu.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(s.out.String(), "mosquitto_pub") {
			return fmt.Errorf("no banner yet; output:\n%s", s.out.String())
		}
		return nil
	})
	return s
}

func (s *server) gatewayFile(name string) string {
	return filepath.Join(s.dir, node.DevTenant, "gateways", node.DevGateway, name)
}

func (s *server) uplink(t *testing.T) *gateway.Uplink {
	t.Helper()
	tlsCfg, err := gateway.TLSFiles(s.gatewayFile("cert.pem"), s.gatewayFile("key.pem"), s.gatewayFile("ca.pem"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := gateway.Dial(ctx, gateway.UplinkConfig{Addr: s.mqtt, Serial: node.DevGateway, TLS: tlsCfg})
	if err != nil {
		t.Fatalf("dial: %v\nserver output:\n%s", err, s.out)
	}
	return u
}

// operator returns a client of the server's API with the operator key.
func (s *server) operator(t *testing.T) *client.Client {
	t.Helper()
	caPEM, err := os.ReadFile(s.gatewayFile("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(s.dir, node.OperatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Server: s.api, CAPEM: caPEM, Credential: strings.TrimSpace(string(key)), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (s *server) messages(t *testing.T) []json.RawMessage {
	t.Helper()
	p, err := s.operator(t).ListMessages(context.Background(), node.DevTenant, client.MessageQuery{Limit: 1000})
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	msgs := make([]json.RawMessage, len(p.Items))
	for i, it := range p.Items {
		msgs[i] = it.Message
	}
	return msgs
}

// TestServeKill9KeepsAcknowledgedMessages publishes QoS 1 in a loop, kills
// the server with SIGKILL mid-stream, restarts it, and checks that every
// message whose PUBACK the client received was stored.
func TestServeKill9KeepsAcknowledgedMessages(t *testing.T) {
	s := startDevServer(t)
	certBefore, err := os.ReadFile(s.gatewayFile("cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	up := s.uplink(t)

	const killAfter = 300
	var acked []int
	base := time.Now().Add(-time.Hour).Unix()
	for i := 0; i < 5000; i++ {
		if i == killAfter { // kill while the client keeps publishing
			go func() { _ = s.cmd.Process.Signal(syscall.SIGKILL) }()
		}
		msg := fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSPR04KIL00000001","moveCount":%d}`, base+int64(i), i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := up.Publish(ctx, []byte(msg), 1)
		cancel()
		if err != nil {
			break
		}
		if res.ReasonCode != 0 {
			t.Fatalf("publish %d: reason 0x%02x %s", i, res.ReasonCode, res.Reason)
		}
		acked = append(acked, i)
	}
	_ = s.cmd.Wait()
	if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("server did not die of SIGKILL: %v", s.cmd.ProcessState)
	}
	if len(acked) < killAfter {
		t.Fatalf("only %d publishes acknowledged before the kill", len(acked))
	}
	t.Logf("%d publishes acknowledged before the connection died", len(acked))

	s2 := s.restart(t)
	stored := map[int]bool{}
	for _, m := range s2.messages(t) {
		var v struct{ MoveCount int }
		if err := json.Unmarshal(m, &v); err != nil {
			t.Fatal(err)
		}
		stored[v.MoveCount] = true
	}
	for _, i := range acked {
		if !stored[i] {
			t.Errorf("message %d was acknowledged but is not stored", i)
		}
	}
	// The dev bootstrap reuses what it made on the first start.
	certAfter, err := os.ReadFile(s2.gatewayFile("cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(certBefore, certAfter) {
		t.Error("the dev gateway certificate was replaced on restart")
	}
	if _, err := s2.uplink(t).Publish(context.Background(), []byte(`{"tsmId":13100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"TSPR04KIL00000001","moveCount":1}`), 1); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
}

func TestServeCheckConfigReportsEveryProblem(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--check-config", "--fsync", "sometimes", "--replicas", "3"}, &out, &errOut)
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"--data-dir", "--fsync", "replicas", "--server-name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report %q does not name %s", err, want)
		}
	}
}

func TestServeFlagsFromEnvironment(t *testing.T) {
	t.Setenv("IOTRANSIT_FSYNC", "always")
	t.Setenv("IOTRANSIT_DATA_DIR", t.TempDir())
	t.Setenv("IOTRANSIT_DEV", "true")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"serve", "--check-config"}, &out, &errOut); err != nil {
		t.Fatalf("check-config with env: %v", err)
	}
	t.Setenv("IOTRANSIT_FSYNC", "bogus")
	if err := run(context.Background(), []string{"serve", "--check-config"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("IOTRANSIT_FSYNC=bogus: %v", err)
	}
}
