package bench

import (
	"os"
	"strconv"
	"strings"
)

// readCPU reads /proc/stat and the utime+stime of this process and of pid
// (0: none).
func readCPU(pid int) cpuSnapshot {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSnapshot{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuSnapshot{}
	}
	var s cpuSnapshot
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuSnapshot{}
		}
		s.total += n
		if i != 3 && i != 4 {
			s.busy += n
		}
	}
	var ok bool
	if s.self, ok = procTicks("self"); !ok {
		return cpuSnapshot{}
	}
	if pid > 0 {
		s.server, _ = procTicks(strconv.Itoa(pid))
	}
	s.ok = true
	return s
}

// procTicks returns utime+stime of /proc/<pid>/stat.
func procTicks(pid string) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (state) on
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	return u + s, err1 == nil && err2 == nil
}

// readRSS returns the resident set size of pid from the VmRSS line of
// /proc/PID/status, in bytes (0 when unknown).
func readRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n * 1024
				}
			}
		}
	}
	return 0
}
