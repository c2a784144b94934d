package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestCPUUsage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU accounting reads /proc")
	}
	a := readCPU(os.Getpid())
	if !a.ok {
		t.Fatal("cannot read /proc/stat or /proc/self/stat")
	}
	// Burn one core for 300 ms.
	x := 0
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		x++
	}
	u := usage(a, readCPU(os.Getpid()), runtime.NumCPU())
	if u == nil {
		t.Fatal("no usage")
	}
	t.Logf("%+v (%d spins)", *u, x)
	// About one core of self (less when other processes compete for the
	// CPU); this process counts as the "server" pid too here.
	if u.Self < 0.1 || u.Self > 1.5 || u.Server != u.Self || u.Busy < u.Self*0.9 || u.Others < 0 || u.Cores != runtime.NumCPU() {
		t.Errorf("usage %+v, want about one core of self", *u)
	}
	if usage(cpuSnapshot{}, a, 2) != nil {
		t.Error("usage of a failed snapshot")
	}
}
