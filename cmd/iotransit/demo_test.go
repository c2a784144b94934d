package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestDemoRunsTheWholeDevicePath runs the demo as a user does and checks
// that what it shows comes from the real device tier: the agent enrolls and
// receives the mesh keys from the cloud, the simulated nodes' frames are
// stored as messages of the agent's gateway and delivered, signed, to the
// receiver, and the injected replay is dropped and counted.
func TestDemoRunsTheWholeDevicePath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node, an agent and mesh-sim for seconds")
	}
	old := demoRound
	demoRound = 2 * time.Second
	t.Cleanup(func() { demoRound = old })
	stdout, stderr, err := runCLI(t, "demo", "--duration", "12s", "--interval", "250ms", "--sensors", "3",
		"--mqtt-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^agent +gateway TSGW06DEV00000002 enrolled`),
		regexp.MustCompile(`(?m)^agent +holds the mesh keys and the list of 3 authorized nodes`),
		regexp.MustCompile(`(?m)^stored .*"tsmTuid":"[A-Z0-9]+MSH0000000[123]".*"tsmGw":"TSGW06DEV00000002"`),
		regexp.MustCompile(`(?m)^webhook .* message\(s\), signature ok$`),
		regexp.MustCompile(`(?m)^agent +dropped [0-9]+ frame\(s\): replay`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("the demo's output has no line matching %s\nstdout:\n%s\nstderr:\n%s", want, stdout, stderr)
		}
	}
	if strings.Contains(stdout, "SIGNATURE REFUSED") {
		t.Errorf("a delivery's signature was refused:\n%s", stdout)
	}
	// Only nodes of the authorized list reach the cloud.
	if m := regexp.MustCompile(`"tsmTuid":"[A-Z0-9]+MSH0000000[4-9]"`).FindString(stdout); m != "" {
		t.Errorf("a message of an unauthorized node was stored: %s", m)
	}
}

// TestDemoPrintedPublishCommandWorksWhileItRuns runs the demo's binary as
// a user does and, while it runs, the mosquitto_pub command it printed,
// verbatim: the command succeeds, the demo shows the message as stored and
// keeps running to its end (issue 10, bug 1: the command used the demo's
// simulated gateway's client id, took over its session, and the demo
// exited with status 2).
func TestDemoPrintedPublishCommandWorksWhileItRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the demo")
	}
	testutil.RequirePeer(t, "mosquitto_pub")
	bin := nodetest.BuildBinary(t)
	out := &testutil.SyncBuffer{}
	demo := exec.Command(bin, "demo", "--duration", "20s", "--mqtt-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
	demo.Stdout, demo.Stderr = out, out
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if demo.ProcessState == nil {
			_ = demo.Process.Kill()
			_ = demo.Wait()
		}
	})
	var command string
	testutil.Eventually(t, 60*time.Second, 50*time.Millisecond, func() error {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "agent    holds the mesh keys") {
				for _, l := range strings.Split(out.String(), "\n") {
					if c := strings.TrimSpace(l); strings.HasPrefix(c, "mosquitto_pub ") {
						command = c
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no publish command and agent yet; output:\n%s", out)
	})
	if msg, err := exec.Command("sh", "-c", command).CombinedOutput(); err != nil {
		t.Fatalf("the printed command %q: %v\n%s\ndemo output:\n%s", command, err, msg, out)
	}
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !regexp.MustCompile(`(?m)^stored .*"tsmTuid":"TSEN01DEV00000042"`).MatchString(out.String()) {
			return fmt.Errorf("the published message is not shown as stored; output:\n%s", out)
		}
		return nil
	})
	if err := demo.Wait(); err != nil {
		t.Fatalf("the demo ended with %v after the printed command ran; output:\n%s", err, out)
	}
	// The agent kept uploading after the command: stored lines of its nodes
	// follow the published message.
	all := out.String()
	at := regexp.MustCompile(`(?m)^stored .*"tsmTuid":"TSEN01DEV00000042"`).FindStringIndex(all)
	after := all[at[1]:]
	if !strings.Contains(after, `"tsmGw":"TSGW06DEV00000002"`) {
		t.Errorf("no message of the demo's gateway after the printed command ran; output:\n%s", out)
	}
}
