package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// init runs this test binary as the live gateways of a storm bench when a
// test's MeasureStorm started it so.
func init() { RunLiveChildIfAsked() }

// TestMeasureStormLiveProcess: the live gateways publish from a process of
// their own, which the report names, before and during the storm.
func TestMeasureStormLiveProcess(t *testing.T) {
	s := externalNode(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := MeasureStorm(ctx, NewHeader(ModeExternal, "test", nil), StormOptions{Server: s, Live: 2, Rate: 40, Storm: 20, Quiet: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.LivePID == 0 || rep.LivePID == os.Getpid() {
		t.Errorf("the live gateways ran in process %d, the storm in %d", rep.LivePID, os.Getpid())
	}
	if rep.StormConnected != 20 || rep.LiveErrors != 0 || rep.LiveBefore.Count < 10 {
		t.Errorf("storm %d connected, live %d errors, %d publishes before the storm: %v", rep.StormConnected, rep.LiveErrors, rep.LiveBefore.Count, rep.LiveSamples)
	}
}

// TestStartLiveReportsTheChildsError: a live process that cannot connect
// says why, and the storm does not start.
func TestStartLiveReportsTheChildsError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := startLive(ctx, "", liveSpec{Addr: "127.0.0.1:1", CAPEM: "not a CA", Rate: 1})
	if err == nil || !strings.Contains(err.Error(), "no CA in the spec") {
		t.Errorf("err %v, want the child's own error", err)
	}
}

// fakeLive writes a shell script standing in for a live process, for the
// live process's error paths, and returns its path.
func fakeLive(t *testing.T, script string) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "live")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"+script), 0o700); err != nil {
		t.Fatal(err)
	}
	return exe
}

// failsWithin runs fn and fails the test unless it returns an error
// within d.
func failsWithin(t *testing.T, d time.Duration, fn func() error, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("%s: no error", what)
		}
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %s", what, d)
	}
}

// TestMeasureStormEndsAWedgedLiveProcess: a live process that never
// answers its result (wedged, or not the bench at all) does not keep the
// storm bench waiting past its context: it is killed and the run fails.
func TestMeasureStormEndsAWedgedLiveProcess(t *testing.T) {
	// Ready at once, then deaf to the end of its input for two minutes.
	exe := fakeLive(t, "read spec\necho '{\"start\":\"'$(date -u +%Y-%m-%dT%H:%M:%SZ)'\"}'\nexec sleep 120\n")
	s := externalNode(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	failsWithin(t, 40*time.Second, func() error {
		_, err := MeasureStorm(ctx, NewHeader(ModeExternal, "test", nil), StormOptions{Server: s, Live: 1, Rate: 10, Storm: 2, Quiet: 200 * time.Millisecond, LiveExecutable: exe})
		return err
	}, "a storm bench whose live process gives no result (its context ends after 15 s)")
}

// TestStartLiveEndsWithItsContext: a live process that does not read its
// spec (deaf, or not the bench) does not keep startLive past its context,
// even with a spec larger than a pipe holds (many live gateways).
func TestStartLiveEndsWithItsContext(t *testing.T) {
	exe := fakeLive(t, "exec sleep 120\n")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	failsWithin(t, 20*time.Second, func() error {
		_, err := startLive(ctx, exe, liveSpec{Addr: "127.0.0.1:1", CAPEM: strings.Repeat("x", 1<<20), Rate: 1})
		return err
	}, "startLive to a process that does not read its spec (its context ends after 2 s)")
}
