package bench

import (
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Header is what every bench report starts with: how the server was run,
// the command and the machine.
type Header struct {
	// Mode is ModeInProcess or ModeExternal.
	Mode       string            `json:"mode"`
	Command    string            `json:"command"`
	Settings   map[string]string `json:"settings"`
	GoVersion  string            `json:"go_version"`
	Platform   string            `json:"platform"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	NumCPU     int               `json:"num_cpu"`
}

// Report modes.
const (
	// ModeInProcess: the node runs in the bench's process, sharing its
	// CPU budget with the load generator (a demonstration of numbers; the
	// server's own cost is hidden in it).
	ModeInProcess = "in-process"
	// ModeExternal: the server is another process, measured from outside
	// (MeasureExternal).
	ModeExternal = "external"
)

// NewHeader returns the header of a bench command's report, with its
// settings (by flag name) and the machine it runs on.
func NewHeader(mode, command string, settings map[string]string) Header {
	return Header{
		Mode:       mode,
		Command:    command,
		Settings:   settings,
		GoVersion:  runtime.Version(),
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
	}
}

// Report is the whole output of an in-process bench command: the JSON of
// -o json.
type Report struct {
	Header
	Results []*SystemReport `json:"results"`
	// Ratio compares iotransit with the peer (iotransit / peer).
	Ratio *Ratio `json:"ratio,omitempty"`
}

// SystemReport is one measured system (or one phase of the forward
// benchmark).
type SystemReport struct {
	*Result
	Name string `json:"name"`
	// Version of the peer binary.
	Version string `json:"version,omitempty"`
	// LoadAvg is /proc/loadavg (1, 5, 15 minutes) just before the run.
	LoadAvg string `json:"load_avg_before,omitempty"`
	// Skipped says why the system was not measured.
	Skipped string `json:"skipped,omitempty"`
	// Fsync is iotransit's durability level.
	Fsync string `json:"fsync,omitempty"`
	// Stored compares what iotransit stored with what it acknowledged.
	Stored *StoredCheck `json:"stored,omitempty"`
	// ServerLog counts iotransit's warnings and errors during the run.
	ServerLog *LogCounts `json:"server_log,omitempty"`
	// Forward is what a receiver got of the run's messages (--forward).
	Forward *ForwardResult `json:"forward,omitempty"`
}

// StoredCheck is the durability check: every acknowledged message must be
// in the tenant's message stream.
type StoredCheck struct {
	Stream string `json:"stream"`
	// Stored messages in the stream; Acked Thingsee messages in acknowledged
	// publishes (warmup included).
	Stored uint64 `json:"stored"`
	Acked  int64  `json:"acked"`
	// Ingest counters: messages stored as duplicates (dropped by the
	// content id) and rejected, and publishes refused.
	Duplicates float64 `json:"duplicates"`
	Rejected   float64 `json:"rejected"`
	Refused    float64 `json:"publishes_refused"`
	// OK is Stored >= Acked. More stored than acknowledged is possible
	// (a publish stored after its client gave up waiting); fewer is a
	// durability bug.
	OK bool `json:"ok"`
}

// Ratio is iotransit divided by the peer.
type Ratio struct {
	Peer       string  `json:"peer"`
	Throughput float64 `json:"throughput"`
	// CPUPerMessage is the ratio of the servers' CPU time per acknowledged
	// publish (external mode, when both were measured).
	CPUPerMessage float64 `json:"cpuPerMessage,omitempty"`
	P50           float64 `json:"p50"`
	P99           float64 `json:"p99"`
}

// NewReport returns the report of an in-process bench command, with its
// settings (by flag name) and the machine it runs on.
func NewReport(command string, settings map[string]string) *Report {
	return &Report{Header: NewHeader(ModeInProcess, command, settings)}
}

// loadAvg returns the 1, 5 and 15 minute load averages, or "" where
// /proc/loadavg does not exist.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// WriteTable writes the report of an ingest run as a table, a column per
// measured system.
func (rep *Report) WriteTable(w io.Writer) {
	s := rep.Settings
	rep.writeHead(w)
	fmt.Fprintf(w, "load:     %s; fsync %s\n", loadShape(s), s["fsync"])
	fmt.Fprintf(w, "mode:     %s (a demonstration of numbers): the iotransit node and the load generator share\n", rep.Mode)
	fmt.Fprintf(w, "          this process and its CPU; a peer broker runs as its own process with the same client\n")
	fmt.Fprintf(w, "          load. Measure a server from outside with --mqtt (docs/PERFORMANCE.md).\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label string, f func(r *SystemReport) string) {
		fmt.Fprint(tw, label)
		for _, r := range rep.Results {
			v := "-"
			if r.Result != nil {
				v = f(r)
			} else if label == "system" {
				v = r.Name
			}
			fmt.Fprint(tw, "\t", v)
		}
		fmt.Fprintln(tw)
	}
	row("system", func(r *SystemReport) string { return displayName(r.Name, r.Version) })
	row("load avg before (1/5/15m)", func(r *SystemReport) string { return r.LoadAvg })
	row("CPU cores used: bench+server/others", func(r *SystemReport) string {
		c := r.CPU
		if c == nil {
			return "n/a"
		}
		if c.Server > 0 {
			return fmt.Sprintf("%.2f+%.2f / %.2f of %d", c.Self, c.Server, c.Others, c.Cores)
		}
		return fmt.Sprintf("%.2f / %.2f of %d", c.Self, c.Others, c.Cores)
	})
	row("publishes acked (measured)", func(r *SystemReport) string { return fmt.Sprintf("%d of %d sent", r.Acked, r.Sent) })
	row("publishes/s", func(r *SystemReport) string { return fmt.Sprintf("%.0f", r.PublishesPerSecond) })
	row("Thingsee messages/s", func(r *SystemReport) string { return fmt.Sprintf("%.0f", r.MessagesPerSecond) })
	for _, p := range percentiles {
		row("latency "+p.name, func(r *SystemReport) string { return fmtMs(p.of(r.Latency)) })
	}
	if s["rate"] != "0" {
		row("send lag p50/p99 (generator)", func(r *SystemReport) string {
			if r.SendLag == nil {
				return "-"
			}
			return fmtMs(r.SendLag.P50Ms) + " / " + fmtMs(r.SendLag.P99Ms)
		})
	}
	row("errors", func(r *SystemReport) string { return r.Errors.String() })
	if s["rate"] != "0" {
		row("missed (due, not sent)", func(r *SystemReport) string { return fmt.Sprint(r.Missed) })
	}
	row("PUBACK reason codes", func(r *SystemReport) string {
		if len(r.ReasonCodes) == 0 {
			return "all 0x00"
		}
		var parts []string
		for _, c := range slices.Sorted(maps.Keys(r.ReasonCodes)) {
			parts = append(parts, fmt.Sprintf("%s×%d", c, r.ReasonCodes[c]))
		}
		return strings.Join(parts, " ")
	})
	row("stored == acked", func(r *SystemReport) string {
		if r.Stored == nil {
			return "n/a (no persistence)"
		}
		c := r.Stored
		switch {
		case !c.OK:
			return fmt.Sprintf("!!! NO: %d stored < %d acked: DURABILITY BUG", c.Stored, c.Acked)
		case c.Stored == uint64(c.Acked):
			return fmt.Sprintf("yes: %d stored = %d acked", c.Stored, c.Acked)
		default:
			return fmt.Sprintf("%d stored > %d acked", c.Stored, c.Acked)
		}
	})
	row("duplicates/rejected/refused", func(r *SystemReport) string {
		if r.Stored == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f / %.0f / %.0f", r.Stored.Duplicates, r.Stored.Rejected, r.Stored.Refused)
	})
	row("server log (warn/error)", func(r *SystemReport) string {
		if r.ServerLog == nil {
			return "n/a"
		}
		return fmt.Sprintf("%d / %d", r.ServerLog.Warnings, r.ServerLog.Errors)
	})
	_ = tw.Flush()
	for _, r := range rep.Results {
		if r.Skipped != "" {
			fmt.Fprintf(w, "\n%s: skipped: %s\n", r.Name, r.Skipped)
		}
		if r.ServerLog != nil && r.ServerLog.Warnings+r.ServerLog.Errors > 0 {
			fmt.Fprintf(w, "\n%s server log:\n  %s\n", r.Name, strings.Join(r.ServerLog.Top(10), "\n  "))
		}
		if r.Result != nil && len(r.Errors.Samples) > 0 {
			fmt.Fprintf(w, "\n%s errors, first ones:\n  %s\n", r.Name, strings.Join(r.Errors.Samples, "\n  "))
		}
	}
	for _, r := range rep.Results {
		if r.Result != nil && r.ReasonCodes["0x10"] > 0 {
			fmt.Fprintf(w, "\n%s: PUBACK 0x10 is \"no matching subscribers\", a success code (counted as acked).\n", r.Name)
		}
	}
	if rt := rep.Ratio; rt != nil {
		fmt.Fprintf(w, "\niotransit / %s: throughput %.2f×, p50 latency %.2f×, p99 latency %.2f×\n", rt.Peer, rt.Throughput, rt.P50, rt.P99)
	}
}

// writeHead writes the first lines of a table: the machine and the
// command.
func (h *Header) writeHead(w io.Writer) {
	fmt.Fprintf(w, "iotransit bench: %s %s, GOMAXPROCS=%d, NumCPU=%d\n", h.GoVersion, h.Platform, h.GOMAXPROCS, h.NumCPU)
	fmt.Fprintf(w, "command:  %s\n", h.Command)
}

// loadShape describes the load of a run from its settings.
func loadShape(s map[string]string) string {
	mode := "closed loop (each gateway: next publish when the previous PUBACK arrives)"
	if win := s["window"]; win != "" && win != "1" {
		mode = "closed loop (each gateway keeps " + win + " publishes in flight)"
	}
	if s["rate"] != "0" {
		mode = "open loop at " + s["rate"] + " publishes/s in total (latency from the due time)"
	}
	return fmt.Sprintf("%s gateways, %s; payload %s; warmup %s, measured %s", s["gateways"], mode, s["payload"], s["warmup"], s["duration"])
}

// displayName is a system's name with its version, if known.
func displayName(name, version string) string {
	if version != "" {
		return name + " (" + strings.TrimPrefix(version, "mosquitto ") + ")"
	}
	return name
}

// String is "0" or the total with the count of each kind.
func (e Errors) String() string {
	if e.Total == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (refused %d, timeouts %d, other %d, connections lost %d)", e.Total, e.Refused, e.Timeouts, e.Other, e.ConnectionsLost)
}

// percentiles are the latency percentiles a table shows.
var percentiles = []struct {
	name string
	of   func(LatencySummary) float64
}{
	{"p50", func(l LatencySummary) float64 { return l.P50Ms }},
	{"p90", func(l LatencySummary) float64 { return l.P90Ms }},
	{"p99", func(l LatencySummary) float64 { return l.P99Ms }},
	{"p99.9", func(l LatencySummary) float64 { return l.P999Ms }},
	{"max", func(l LatencySummary) float64 { return l.MaxMs }},
}

// fmtMs writes milliseconds with 2 significant decimals at most.
func fmtMs(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

// fmtOrder shows a forward result's order violations and the devices
// they are of, loudly unless none.
func fmtOrder(fr *ForwardResult) string {
	if fr.OrderViolations == 0 {
		return "0"
	}
	return fmt.Sprintf("!!! %d (%d devices) !!!", fr.OrderViolations, fr.DevicesOutOfOrder)
}

// WriteForwardTable writes the report of a forward run (--forward) as a
// table, a column per phase.
func (rep *Report) WriteForwardTable(w io.Writer) {
	s := rep.Settings
	fmt.Fprintf(w, "iotransit bench --forward %s: %s %s, GOMAXPROCS=%d, NumCPU=%d\n", s["forward"], rep.GoVersion, rep.Platform, rep.GOMAXPROCS, rep.NumCPU)
	fmt.Fprintf(w, "command:  %s\n", rep.Command)
	fmt.Fprintf(w, "load:     %s gateways; payload %s; warmup %s, measured %s; fsync %s\n", s["gateways"], s["payload"], s["warmup"], s["duration"], s["fsync"])
	fmt.Fprintf(w, "forward:  a %s integration per phase to an HTTPS receiver in this process; batches of at most %s messages or %s\n", s["forward"], s["forward-batch"], s["forward-wait"])
	fmt.Fprintf(w, "note:     the node, the gateways and the receiver share this process; e2e latency is from the\n")
	fmt.Fprintf(w, "          publish (payload handed to the MQTT client) to the receipt of the whole webhook request.\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label string, f func(r *SystemReport, fr *ForwardResult) string) {
		fmt.Fprint(tw, label)
		for _, r := range rep.Results {
			v := "-"
			if r.Result != nil && r.Forward != nil {
				v = f(r, r.Forward)
			}
			fmt.Fprint(tw, "\t", v)
		}
		fmt.Fprintln(tw)
	}
	row("phase", func(_ *SystemReport, fr *ForwardResult) string { return fr.Phase })
	row("lanes (delivery.concurrency)", func(_ *SystemReport, fr *ForwardResult) string { return strconv.Itoa(fr.Concurrency) })
	row("load", func(r *SystemReport, _ *ForwardResult) string {
		if r.Mode == "open-loop" {
			return fmt.Sprintf("open loop, %g publishes/s", r.TargetRate)
		}
		return "closed loop, 1 in flight per gateway"
	})
	row("load avg before (1/5/15m)", func(r *SystemReport, _ *ForwardResult) string { return r.LoadAvg })
	row("CPU cores used: process/others", func(r *SystemReport, _ *ForwardResult) string {
		if c := r.CPU; c != nil {
			return fmt.Sprintf("%.2f / %.2f of %d", c.Self, c.Others, c.Cores)
		}
		return "n/a"
	})
	row("ingest: Thingsee messages/s", func(r *SystemReport, _ *ForwardResult) string {
		return fmt.Sprintf("%.0f", r.MessagesPerSecond)
	})
	row("ingest: PUBACK latency p50 / p99", func(r *SystemReport, _ *ForwardResult) string {
		return fmtMs(r.Latency.P50Ms) + " / " + fmtMs(r.Latency.P99Ms)
	})
	row("forward: delivered messages/s", func(_ *SystemReport, fr *ForwardResult) string {
		return fmt.Sprintf("%.0f", fr.DeliveredPerSecond)
	})
	row("forward: batches, mean / max size", func(_ *SystemReport, fr *ForwardResult) string {
		return fmt.Sprintf("%d, %.1f / %d", fr.Batches, fr.MeanBatch, fr.MaxBatch)
	})
	for _, p := range percentiles {
		if p.name != "p99.9" { // the forward table stops at p99
			row("e2e latency "+p.name, func(_ *SystemReport, fr *ForwardResult) string { return fmtMs(p.of(fr.E2E)) })
		}
	}
	row("  of it tsmCloudTs→receiver p50 / p99", func(_ *SystemReport, fr *ForwardResult) string {
		return fmtMs(fr.CloudToReceiver.P50Ms) + " / " + fmtMs(fr.CloudToReceiver.P99Ms)
	})
	row("not yet received at window end", func(_ *SystemReport, fr *ForwardResult) string {
		v := fmt.Sprint(fr.PendingAtWindowEnd)
		if fr.AtLoadEnd != nil {
			v += fmt.Sprintf(" (API backlog after the load: %d)", fr.AtLoadEnd.Backlog)
		}
		return v
	})
	row("published / acked / arrived", func(_ *SystemReport, fr *ForwardResult) string {
		return fmt.Sprintf("%d / %d / %d", fr.Published, fr.Acked, fr.Arrived)
	})
	row("missing (acked, not arrived)", func(_ *SystemReport, fr *ForwardResult) string {
		after := fmt.Sprintf("after waiting %.1fs", fr.WaitedSeconds)
		switch {
		case fr.Missing == 0:
			return "0, " + after
		case fr.AfterWait != nil:
			return fmt.Sprintf("!!! %d, %s (backlog %d) !!!", fr.Missing, after, fr.AfterWait.Backlog)
		default:
			return fmt.Sprintf("!!! %d, %s !!!", fr.Missing, after)
		}
	})
	row("duplicates / retried batches", func(_ *SystemReport, fr *ForwardResult) string {
		return fmt.Sprintf("%d / %d", fr.Duplicates, fr.RetriedBatches)
	})
	row("signature failures", func(_ *SystemReport, fr *ForwardResult) string { return fmt.Sprint(fr.SignatureFailures) })
	row("order violations (devices)", func(_ *SystemReport, fr *ForwardResult) string { return fmtOrder(fr) })
	row("unknown messages / bad requests", func(_ *SystemReport, fr *ForwardResult) string {
		return fmt.Sprintf("%d / %d", fr.Unknown, fr.BadRequests)
	})
	row("API: failed attempts / dead letters", func(_ *SystemReport, fr *ForwardResult) string {
		a := fr.AfterWait
		if a == nil {
			return "n/a"
		}
		v := fmt.Sprintf("%d / %d", a.State.Failed, a.DeadLetters)
		if a.State.LastError != "" {
			v += " (last: " + a.State.LastError + ")"
		}
		return v
	})
	row("ingest errors", func(r *SystemReport, _ *ForwardResult) string { return r.Errors.String() })
	row("stored == acked (cumulative)", func(r *SystemReport, _ *ForwardResult) string {
		c := r.Stored
		switch {
		case c == nil:
			return "n/a"
		case !c.OK:
			return fmt.Sprintf("!!! NO: %d stored < %d acked !!!", c.Stored, c.Acked)
		case c.Stored == uint64(c.Acked):
			return fmt.Sprintf("yes: %d", c.Stored)
		default:
			return fmt.Sprintf("%d stored > %d acked", c.Stored, c.Acked)
		}
	})
	row("ingest duplicates/rejected/refused", func(r *SystemReport, _ *ForwardResult) string {
		if r.Stored == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f / %.0f / %.0f", r.Stored.Duplicates, r.Stored.Rejected, r.Stored.Refused)
	})
	row("server log (warn/error)", func(r *SystemReport, _ *ForwardResult) string {
		if r.ServerLog == nil {
			return "n/a"
		}
		return fmt.Sprintf("%d / %d", r.ServerLog.Warnings, r.ServerLog.Errors)
	})
	_ = tw.Flush()
	for _, r := range rep.Results {
		fr := r.Forward
		if fr == nil {
			continue
		}
		if len(fr.Samples) > 0 {
			fmt.Fprintf(w, "\n%s: receiver problems, first ones:\n  %s\n", fr.Phase, strings.Join(fr.Samples, "\n  "))
		}
		if r.ServerLog != nil && r.ServerLog.Warnings+r.ServerLog.Errors > 0 {
			fmt.Fprintf(w, "\n%s: server log:\n  %s\n", fr.Phase, strings.Join(r.ServerLog.Top(10), "\n  "))
		}
		if r.Result != nil && len(r.Errors.Samples) > 0 {
			fmt.Fprintf(w, "\n%s: ingest errors, first ones:\n  %s\n", fr.Phase, strings.Join(r.Errors.Samples, "\n  "))
		}
		if fr.Missing > 0 {
			fmt.Fprintf(w, "\n!!! %s: %d acknowledged messages had not arrived %.1fs after the load !!!\n", fr.Phase, fr.Missing, fr.WaitedSeconds)
		}
	}
}
