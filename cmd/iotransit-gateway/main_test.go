package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestGatewayBinaryCommandLine runs the built binary: --help prints the
// agent's usage under the binary's name and exits 0; a command line that
// lacks what the agent needs names every missing flag at once and exits 2
// without starting anything. (The agent itself is tested in
// internal/gateway/agent, and end to end through this binary in
// cmd/iotransit's TestMeasureAgent and the agent's process tests.)
func TestGatewayBinaryCommandLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := nodetest.BuildCommand(t, "iotransit-gateway")
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "Usage: iotransit-gateway --data-dir") || !strings.Contains(string(out), "-pkcs11-module") {
		t.Errorf("--help: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--serial", "TSGW06DEV00000009").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("a command line without --data-dir: %v, want exit status 2\n%s", err, out)
	}
	for _, flag := range []string{"--data-dir", "--server", "--mqtt", "--ca", "--mesh-addr"} {
		if !strings.Contains(string(out), "iotransit-gateway needs "+flag) {
			t.Errorf("the refusal does not name %s:\n%s", flag, out)
		}
	}
	if strings.Contains(string(out), "needs --serial") {
		t.Errorf("--serial was given but is reported missing:\n%s", out)
	}
}
