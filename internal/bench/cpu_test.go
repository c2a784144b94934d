package bench

import (
	"math"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// cpuSeconds is this process's user+system CPU time from getrusage, a source
// independent of the /proc files readCPU parses.
func cpuSeconds(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func TestCPUUsage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU accounting reads /proc")
	}
	start, cpu0 := time.Now(), cpuSeconds(t)
	a := readCPU(os.Getpid())
	if !a.ok {
		t.Fatal("cannot read /proc/stat or /proc/self/stat")
	}
	// Burn until this process has used 300 ms of CPU, however busy the
	// machine is (other test binaries run at the same time).
	x := 0
	for deadline := start.Add(30 * time.Second); cpuSeconds(t)-cpu0 < 0.3 && time.Now().Before(deadline); {
		for range 100000 {
			x++
		}
	}
	b := readCPU(os.Getpid())
	wall, used := time.Since(start).Seconds(), cpuSeconds(t)-cpu0
	u := usage(a, b, runtime.NumCPU())
	if u == nil {
		t.Fatal("no usage")
	}
	t.Logf("%+v over %.3fs wall, %.3fs CPU by getrusage (%d spins)", *u, wall, used, x)
	// Self in cores times the wall time is the CPU time getrusage saw, up to
	// the 10 ms clock tick of /proc and the time between the readings.
	if got := u.Self * wall; math.Abs(got-used) > 0.05+0.2*used {
		t.Errorf("self %.3f cores x %.3fs = %.3fs of CPU, getrusage says %.3fs", u.Self, wall, got, used)
	}
	// This process counts as the "server" pid too here. /proc/self and
	// /proc/<pid> are read one after the other while the runtime's own
	// threads (GC, the test's timer) run, so they may differ by a few ticks.
	if math.Abs(u.Server-u.Self)*wall > 0.03 || u.Busy < u.Self*0.9 || u.Others < 0 || u.Cores != runtime.NumCPU() {
		t.Errorf("usage %+v: inconsistent", *u)
	}
	if usage(cpuSnapshot{}, a, 2) != nil {
		t.Error("usage of a failed snapshot")
	}
}
