package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	loadgen "github.com/iotransit/iotransit/internal/bench"
	"github.com/iotransit/iotransit/internal/node"
)

// TestBenchIdle connects idle gateways to a `serve --dev` process over two
// tenants: the server saw every one of them (its own count of sessions
// accepted, from /metrics), each is alive at the end, the memory per
// connection is reported; a second run claims and enrolls nothing new.
func TestBenchIdle(t *testing.T) {
	s := startDevServerArgs(t)
	const n = 40
	args := []string{"--mqtt", s.MQTT, "--api", "https://" + s.API, "--ca", s.GatewayFile("ca.pem"),
		"--operator-key-file", filepath.Join(s.Dir, node.OperatorKeyFile), "--server-pid", strconv.Itoa(s.Cmd.Process.Pid),
		"--cache-dir", t.TempDir(), "--idle", strconv.Itoa(n), "--tenants", "2", "--duration", "500ms"}

	t.Run("json", func(t *testing.T) {
		stdout, stderr, err := runBenchCmd(t, append(args, "-o", "json")...)
		if err != nil {
			t.Fatalf("bench: %v\n%s\nserver:\n%s", err, stderr, s.Out)
		}
		var rep loadgen.IdleReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		if rep.Connected != n || rep.Failed != 0 || rep.Alive != n || rep.Tenants != 2 {
			t.Errorf("connected %d, failed %d, alive %d, tenants %d: want %d, 0, %d, 2", rep.Connected, rep.Failed, rep.Alive, rep.Tenants, n, n)
		}
		if seen := rep.After.ConnectionsAccepted - rep.Before.ConnectionsAccepted; seen != n {
			t.Errorf("the server accepted %v sessions during the run, want %d", seen, n)
		}
		if hs := rep.After.Handshakes - rep.Before.Handshakes; hs != n {
			t.Errorf("the server made %v handshakes during the run, want %d", hs, n)
		}
		pc := rep.PerConnection
		switch {
		case pc == nil:
			t.Fatal("no figures per connection")
		case pc.RSSBytes == 0 || rep.After.RSSBytes <= 0:
			t.Errorf("RSS per connection %v (after %d): want a figure with --server-pid", pc.RSSBytes, rep.After.RSSBytes)
		case pc.Goroutines < 1.5 || pc.Goroutines > 3:
			// mochi's read and write loops; the handshake's goroutine has ended
			t.Errorf("%.2f goroutines per connection, want about 2", pc.Goroutines)
		case pc.HeapStackBytes <= 0:
			t.Errorf("heap+stacks per connection %v", pc.HeapStackBytes)
		}
		if p := rep.Provision; p == nil || p.Enrolled != n || p.Reused != 0 {
			t.Errorf("provision %+v, want %d enrolled", p, n)
		}
		if t.Failed() {
			t.Logf("report:\n%s", stdout)
		}
	})
	t.Run("cache reused", func(t *testing.T) {
		stdout, stderr, err := runBenchCmd(t, args...)
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, stderr)
		}
		for _, want := range []string{"mode:     idle", "connected:        40 (failed 0), alive at the end 40", "40 accepted by the server", "per connection:   RSS ", fmt.Sprint(n) + " reused from the cache, 0 enrolled"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("table lacks %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stderr, "claiming") {
			t.Errorf("the second run claimed gateways again:\n%s", stderr)
		}
	})
}

// TestBenchStorm runs the storm bench against a `serve --dev` process
// whose handshakes are paced: every storm gateway connects, the live
// gateways are acknowledged before and during the storm.
func TestBenchStorm(t *testing.T) {
	s := startDevServerArgs(t, "--handshake-rate", "200", "--handshake-parallel", "1")
	const n = 60
	stdout, stderr, err := runBenchCmd(t, "--mqtt", s.MQTT, "--api", "https://"+s.API, "--ca", s.GatewayFile("ca.pem"),
		"--operator-key-file", filepath.Join(s.Dir, node.OperatorKeyFile), "--cache-dir", t.TempDir(),
		"--storm", strconv.Itoa(n), "--gateways", "2", "--rate", "40", "--duration", "1s", "-o", "json")
	if err != nil {
		t.Fatalf("bench: %v\n%s\nserver:\n%s", err, stderr, s.Out)
	}
	var rep loadgen.StormReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if rep.StormConnected != n || rep.StormFailed != 0 || rep.StormAttempts < n {
		t.Errorf("storm: %d connected, %d failed, %d attempts; want %d, 0, at least %d", rep.StormConnected, rep.StormFailed, rep.StormAttempts, n, n)
	}
	if rep.LiveErrors != 0 || rep.LiveBefore.Count == 0 || rep.LiveDuring.Count == 0 {
		t.Errorf("live: %d errors, %d publishes before the storm, %d during it", rep.LiveErrors, rep.LiveBefore.Count, rep.LiveDuring.Count)
	}
	if rep.LivePID == 0 || rep.LivePID == os.Getpid() {
		t.Errorf("the live gateways ran in process %d, the storm in %d: want another", rep.LivePID, os.Getpid())
	}
	if hs := rep.ServerAfter.Handshakes - rep.ServerBefore.Handshakes; hs < n {
		t.Errorf("the server made %v handshakes during the storm, want at least %d", hs, n)
	}
	if t.Failed() {
		t.Logf("report:\n%s", stdout)
	}
}

func TestBenchIdleRefusesBadFlags(t *testing.T) {
	ok := []string{"--mqtt", "127.0.0.1:1", "--api", "https://127.0.0.1:2", "--ca", "x", "--operator-key", "itop_x"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "idle without mqtt", args: []string{"--idle", "5"}, want: "--idle"},
		{name: "storm without mqtt", args: []string{"--storm", "5"}, want: "--storm"},
		{name: "idle and storm", args: append(ok, "--idle", "5", "--storm", "5"), want: "apart"},
		{name: "storm without rate", args: append(ok, "--storm", "5"), want: "--rate"},
		{name: "idle with a peer", args: append(ok, "--idle", "5", "--peer", "mosquitto"), want: "--peer"},
		{name: "too many idle", args: append(ok, "--idle", "100001"), want: "--idle"},
		{name: "negative tenants", args: append(ok, "--idle", "5", "--tenants", "-1"), want: "--tenants"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runBenchCmd(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("bench %v: error %v, want one naming %s", tc.args, err, tc.want)
			}
		})
	}
}

// The handshake pacing flags are range-checked by --check-config.
func TestServeCheckConfigHandshakeFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--check-config", "--dev", "--data-dir", t.TempDir(), "--mqtt-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0",
		"--handshake-rate", "0.5", "--handshake-parallel", "5000"}, &out, &errOut)
	if err == nil {
		t.Fatal("bad handshake pacing accepted")
	}
	for _, want := range []string{"handshake rate 0.5", "handshake concurrency 5000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report %q does not name %s", err, want)
		}
	}
}

// init runs this test binary as the live gateways of a storm bench when
// the bench under test started it so (its executable is this binary, not
// iotransit).
func init() { loadgen.RunLiveChildIfAsked() }
