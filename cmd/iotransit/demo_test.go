package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
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
