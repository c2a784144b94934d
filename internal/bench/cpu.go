package bench

// CPUUsage is how the machine's CPU time was spent during the measured
// window, in cores (CPU seconds per second): whether other processes took
// CPU from the run is the first question about any number here.
type CPUUsage struct {
	// Cores is the number of CPUs.
	Cores int `json:"cores"`
	// Busy is all non-idle CPU time of the machine.
	Busy float64 `json:"busy"`
	// Self is this process: the load generator, plus the server when it
	// runs in-process.
	Self float64 `json:"self"`
	// Server is the server's own process (a peer broker), when separate.
	Server float64 `json:"server,omitempty"`
	// Others is Busy minus Self and Server: everything else on the machine.
	Others float64 `json:"others"`
}

// cpuSnapshot is cumulative CPU time in clock ticks.
type cpuSnapshot struct {
	ok           bool
	busy, total  uint64
	self, server uint64
}

func usage(a, b cpuSnapshot, cores int) *CPUUsage {
	if !a.ok || !b.ok || b.total <= a.total {
		return nil
	}
	// total counts ticks of all CPUs: per-CPU seconds are total/cores.
	perCore := float64(b.total-a.total) / float64(cores)
	f := func(x, y uint64) float64 {
		if y < x {
			return 0
		}
		return float64(y-x) / perCore
	}
	u := &CPUUsage{Cores: cores, Busy: f(a.busy, b.busy), Self: f(a.self, b.self), Server: f(a.server, b.server)}
	u.Others = max(0, u.Busy-u.Self-u.Server)
	return u
}
