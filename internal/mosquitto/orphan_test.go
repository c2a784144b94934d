//go:build linux

package mosquitto_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/mosquitto"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// orphanHelper is set in the environment of the child process of
// TestMosquittoDiesWithItsParent.
const orphanHelper = "IOTRANSIT_MOSQUITTO_ORPHAN_HELPER"

// TestMosquittoDiesWithItsParent: a broker must not outlive the process
// that started it when that process is killed without stopping it (a test
// binary killed by go test -timeout, a CI job cancelled with SIGKILL).
// Pdeathsig is the safety net, but the kernel clears it when a process
// changes its user id, and mosquitto started as root switches to user
// mosquitto: as root the broker is left running (with its directory).
func TestMosquittoDiesWithItsParent(t *testing.T) {
	if os.Getenv(orphanHelper) == "1" {
		runOrphanHelper()
		return
	}
	tu.RequireMosquitto(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestMosquittoDiesWithItsParent$", "-test.v")
	cmd.Env = append(os.Environ(), orphanHelper+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	var dir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "broker %d %s", &pid, &dir); err == nil {
			break
		}
	}
	if pid == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the helper did not start a broker")
	}
	// The test must not leak what it checks for.
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.RemoveAll(dir)
	})
	_ = cmd.Process.Kill() // the parent dies without stopping the broker
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto (pid %d, euid of the test %d) still runs 5s after its parent was killed", pid, os.Geteuid())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runOrphanHelper starts a broker, says its pid and directory, and waits
// to be killed.
func runOrphanHelper() {
	ca, err := pki.NewCA("orphan test CA", time.Hour, time.Now())
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := mosquitto.Start(ctx, mosquitto.Config{CA: ca, Validity: time.Hour, DirPrefix: "iotransit-orphan-test-"})
	if err != nil {
		panic(err)
	}
	fmt.Printf("broker %d %s\n", b.PID(), b.Dir())
	time.Sleep(time.Minute)
	_ = b.Close()
}

// alive reports whether pid is a process that has not exited (a zombie
// waiting for its new parent to reap it has exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
