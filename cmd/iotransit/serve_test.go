package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// buildBinary builds the iotransit binary.
func buildBinary(t *testing.T) string { return nodetest.BuildBinary(t) }

// server is an iotransit serve --dev process.
type server struct{ *nodetest.DevServer }

// startDevServer builds the binary and starts `iotransit serve --dev
// [args]` on a new data directory and free ports (not in -short mode).
func startDevServer(t *testing.T, args ...string) server {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	return server{nodetest.StartDevServer(t, buildBinary(t), "warn", args...)}
}

// restart starts the server again on its data directory and ports.
func (s server) restart(t *testing.T) server { return server{s.Restart(t)} }

func (s server) messages(t *testing.T) []json.RawMessage {
	t.Helper()
	p, err := s.Operator(t).ListMessages(context.Background(), node.DevTenant, client.MessageQuery{Limit: 1000})
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
	certBefore, err := os.ReadFile(s.GatewayFile("cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	up := s.Uplink(t)

	const killAfter = 300
	var acked []int
	base := time.Now().Add(-time.Hour).Unix()
	for i := 0; i < 5000; i++ {
		if i == killAfter { // kill while the client keeps publishing
			go func() { _ = s.Cmd.Process.Signal(syscall.SIGKILL) }()
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
	_ = s.Cmd.Wait()
	if ws, ok := s.Cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("server did not die of SIGKILL: %v", s.Cmd.ProcessState)
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
	certAfter, err := os.ReadFile(s2.GatewayFile("cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(certBefore, certAfter) {
		t.Error("the dev gateway certificate was replaced on restart")
	}
	if _, err := s2.Uplink(t).Publish(context.Background(), []byte(`{"tsmId":13100,"tsmEv":10,"tsmTs":1700000000,"tsmTuid":"TSPR04KIL00000001","moveCount":1}`), 1); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
}

func TestServeCheckConfigReportsEveryProblem(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--check-config", "--fsync", "sometimes", "--replicas", "3",
		"--receive-maximum", "70000", "--ingest-max-inflight", "-1"}, &out, &errOut)
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	for _, want := range []string{"--data-dir", "--fsync", "replicas", "--server-name", "receive maximum 70000", "max in flight -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report %q does not name %s", err, want)
		}
	}
}

func TestServeFlagsFromEnvironment(t *testing.T) {
	t.Setenv("IOTRANSIT_FSYNC", "always")
	t.Setenv("IOTRANSIT_DATA_DIR", t.TempDir())
	t.Setenv("IOTRANSIT_DEV", "true")
	t.Setenv("IOTRANSIT_MQTT_ADDR", "127.0.0.1:0") // check-config listens on them
	t.Setenv("IOTRANSIT_API_ADDR", "127.0.0.1:0")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"serve", "--check-config"}, &out, &errOut); err != nil {
		t.Fatalf("check-config with env: %v", err)
	}
	t.Setenv("IOTRANSIT_FSYNC", "bogus")
	if err := run(context.Background(), []string{"serve", "--check-config"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("IOTRANSIT_FSYNC=bogus: %v", err)
	}
}

// TestServeCheckConfigChecksWhatItPromises: --check-config reports, at
// once, an address already in use, an address that does not parse, a
// --tls-cert file that does not exist and a data directory another running
// server holds (issue 10, bug 4: it said "configuration ok" to all of them).
func TestServeCheckConfigChecksWhatItPromises(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	missing := filepath.Join(t.TempDir(), "no-such-cert.pem")
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"serve", "--check-config", "--data-dir", t.TempDir(), "--dev",
		"--mqtt-addr", busy.Addr().String(), "--api-addr", "localhost:http-ish", "--tls-cert", missing, "--tls-key", missing}, &out, &errOut)
	if err == nil {
		t.Fatalf("configuration accepted: %s", out.String())
	}
	for _, want := range []string{"--mqtt-addr " + busy.Addr().String(), "in use", "--api-addr", "--tls-cert"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report %q does not name %q", err, want)
		}
	}

	// A data directory held by a running server.
	held := t.TempDir()
	nodetest.Start(t, func(c *node.Config) { c.DataDir = held })
	err = run(context.Background(), []string{"serve", "--check-config", "--data-dir", held, "--dev",
		"--mqtt-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "in use by another iotransit") {
		t.Errorf("check-config on a held data directory: %v", err)
	}
}

// TestServeHelpNamesTheEnvironment: serve's help names each flag's
// environment variable, as the README says it does (issue 10).
func TestServeHelpNamesTheEnvironment(t *testing.T) {
	var out, errOut bytes.Buffer
	_ = run(context.Background(), []string{"serve", "-h"}, &out, &errOut)
	help := out.String() + errOut.String()
	for _, want := range []string{"[$IOTRANSIT_DATA_DIR]", "[$IOTRANSIT_FSYNC]", "[$IOTRANSIT_MQTT_ADDR]", "environment variable"} {
		if !strings.Contains(help, want) {
			t.Errorf("serve -h does not name %s:\n%s", want, help)
		}
	}
}

// TestDevBannerQuotesItsURL: the printed curl command's URL holds a "?",
// which zsh expands as a glob unless quoted (issue 10).
func TestDevBannerQuotesItsURL(t *testing.T) {
	dir := t.TempDir()
	n := nodetest.Start(t, func(c *node.Config) { c.DataDir = dir })
	var out bytes.Buffer
	printDevBanner(&out, n, dir)
	if !regexp.MustCompile(`curl .* 'https://[^' ]+/messages\?limit=5'`).MatchString(out.String()) {
		t.Errorf("the curl command's URL is not quoted:\n%s", out.String())
	}
}

// TestServePipelineFlags: --receive-maximum and --ingest-max-inflight reach
// the ingest's configuration (which announces the first in CONNACK and
// bounds the second: internal/ingest's pipeline tests).
func TestServePipelineFlags(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f := newServeFlags(fs)
	if got := f.cfg.Ingest; got.ReceiveMaximum != 32 || got.MaxInFlight != 16384 {
		t.Fatalf("defaults: receive maximum %d, in flight %d; want the ingest's 32 and 16384", got.ReceiveMaximum, got.MaxInFlight)
	}
	if err := fs.Parse([]string{"--receive-maximum", "5", "--ingest-max-inflight", "100"}); err != nil {
		t.Fatal(err)
	}
	if got := f.cfg.Ingest; got.ReceiveMaximum != 5 || got.MaxInFlight != 100 {
		t.Fatalf("receive maximum %d, in flight %d; want 5 and 100", got.ReceiveMaximum, got.MaxInFlight)
	}
}
