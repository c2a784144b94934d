// Package testutil holds the shared test helpers of iotransit that need no
// running node: polling (Eventually, scaled by Slowdown), a test logger,
// peer programs (RequirePeer, a mosquitto broker), certificates minted at
// run time through one key→CSR→certificate path (valid, expired, foreign,
// self-signed), an HTTPS webhook Receiver, HTTP answers, Prometheus
// counters and sample Thingsee messages. It is a leaf: it imports no part
// of iotransit that runs a server, so every package's tests may use it. A
// running node for end-to-end tests is in testutil/nodetest. Only tests
// import it.
package testutil

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Slowdown scales test deadlines (IOTRANSIT_TEST_SLOWDOWN, default 1), for
// slow CI machines.
func Slowdown() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("IOTRANSIT_TEST_SLOWDOWN")); err == nil && v > 0 {
		return time.Duration(v)
	}
	return 1
}

// Eventually polls fn every step until it returns nil or total (scaled by
// Slowdown) has passed, then fails the test with fn's last error.
func Eventually(t testing.TB, total, step time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total * Slowdown())
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", total*Slowdown(), err)
		}
		time.Sleep(step)
	}
}

// RequirePeer returns the path of a peer binary, skipping the test if it is
// missing, unless IOTRANSIT_REQUIRE_PEERS=1 (set by CI), which fails it.
func RequirePeer(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missingPeer(t, name, err)
	}
	return p
}

// missingPeer skips the test for a peer that is not there, or fails it
// with IOTRANSIT_REQUIRE_PEERS=1.
func missingPeer(t testing.TB, name string, err error) {
	t.Helper()
	if os.Getenv("IOTRANSIT_REQUIRE_PEERS") == "1" {
		t.Fatalf("peer %s is required (IOTRANSIT_REQUIRE_PEERS=1) but not found: %v", name, err)
	}
	t.Skipf("peer %s not installed: %v", name, err)
}

// Logger returns a logger that writes to the test log at level warn, or
// debug with IOTRANSIT_TEST_LOG=debug. It goes quiet once the test is over,
// so that a late line from a server shutting down cannot panic.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("IOTRANSIT_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testWriter writes to the test log until stop.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Thingsee returns a valid weather message of sensor tuid at ts.
func Thingsee(tuid string, ts int64, temp float64) string {
	return fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"%s","temp":%g,"humd":41.5}`, ts, tuid, temp)
}

// Counter returns the value of a counter from g with exactly these labels
// (0 when absent).
func Counter(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// SyncBuffer is a buffer that a process's output copier writes while the
// test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Len returns how many bytes were written.
func (s *SyncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}
