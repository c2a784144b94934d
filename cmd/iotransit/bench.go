package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	loadgen "github.com/iotransit/iotransit/internal/bench"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/store"
)

// benchTenant is the tenant bench provisions its gateways in.
const benchTenant = "bench"

// benchOptions are the flags of bench.
type benchOptions struct {
	gateways    int
	duration    time.Duration
	warmup      time.Duration
	rate        float64
	payload     string
	fsync       string
	peer        string
	output      string
	logLevel    string
	maxInflight int
	tmpDir      string
}

// benchReport is the whole output of one bench command.
type benchReport struct {
	Command    string            `json:"command"`
	Settings   map[string]string `json:"settings"`
	GoVersion  string            `json:"go_version"`
	Platform   string            `json:"platform"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	NumCPU     int               `json:"num_cpu"`
	Results    []*systemReport   `json:"results"`
	// Ratio compares iotransit with the peer (iotransit / peer).
	Ratio *benchRatio `json:"ratio,omitempty"`
}

// systemReport is one measured system.
type systemReport struct {
	*loadgen.Result
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
	Stored *storedCheck `json:"stored,omitempty"`
	// ServerLog counts iotransit's warnings and errors during the run.
	ServerLog *loadgen.LogCounts `json:"server_log,omitempty"`
}

// storedCheck is the durability check: every acknowledged message must be
// in the tenant's message stream.
type storedCheck struct {
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

// benchRatio is iotransit divided by the peer.
type benchRatio struct {
	Peer       string  `json:"peer"`
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchOptions
	fs.IntVar(&o.gateways, "gateways", 50, "concurrent gateways, each its own mTLS connection, serial and certificate")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "measured time")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before measuring, not measured")
	fs.Float64Var(&o.rate, "rate", 0, "publishes per second in total on an open-loop schedule (0: closed loop, each gateway one publish in flight)")
	fs.StringVar(&o.payload, "payload", string(loadgen.PayloadTypical), "typical (one Thingsee weather message, ~150 bytes) or array10 (an array of 10)")
	fs.StringVar(&o.fsync, "fsync", node.FsyncDefault, "iotransit durability: default or always")
	fs.StringVar(&o.peer, "peer", "", "also measure this broker with the same load afterwards: mosquitto")
	fs.StringVar(&o.output, "o", "table", "output: table or json")
	fs.StringVar(&o.logLevel, "log-level", "warn", "iotransit server log level (debug, info, warn, error)")
	fs.IntVar(&o.maxInflight, "max-inflight", 100, "open loop: publishes in flight per gateway at most")
	fs.StringVar(&o.tmpDir, "tmp-dir", "", "where the node's temporary data directory goes (default: the system's; put it on the disk to measure)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	payload, err := o.validate()
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}

	rep := &benchReport{
		Command:    commandLine(args),
		Settings:   map[string]string{},
		GoVersion:  runtime.Version(),
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
	}
	fs.VisitAll(func(f *flag.Flag) { rep.Settings[f.Name] = f.Value.String() })
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }
	cfg := loadgen.Config{
		Warmup: o.warmup, Duration: o.duration, Rate: o.rate, Payload: payload,
		MaxInflight: o.maxInflight, Progress: progress,
	}

	var failures []error
	it, err := benchIotransit(ctx, o, cfg, log.Handler(), progress)
	if err != nil {
		return err
	}
	rep.Results = append(rep.Results, it)
	if it.Stored != nil && !it.Stored.OK {
		failures = append(failures, fmt.Errorf("DURABILITY: iotransit acknowledged %d messages but stored %d", it.Stored.Acked, it.Stored.Stored))
	}
	if o.peer != "" && ctx.Err() == nil {
		p, err := benchMosquitto(ctx, o, cfg, progress)
		if err != nil {
			failures = append(failures, err)
			p = &systemReport{Name: "mosquitto", Skipped: "failed: " + err.Error()}
		}
		rep.Results = append(rep.Results, p)
		if p.Result != nil && p.Acked > 0 && it.Acked > 0 {
			rep.Ratio = &benchRatio{
				Peer:       p.Name,
				Throughput: it.PublishesPerSecond / p.PublishesPerSecond,
				P50:        it.Latency.P50Ms / p.Latency.P50Ms,
				P99:        it.Latency.P99Ms / p.Latency.P99Ms,
			}
		}
	}

	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printBenchTable(stdout, rep)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("bench interrupted: %w", ctx.Err())
	}
	return errors.Join(failures...)
}

func (o *benchOptions) validate() (loadgen.PayloadKind, error) {
	var errs []error
	if o.gateways < 1 || o.gateways > 100000 {
		errs = append(errs, fmt.Errorf("--gateways %d: want 1 to 100000", o.gateways))
	}
	if o.duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %s: must be positive", o.duration))
	}
	if o.warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup %s: must not be negative", o.warmup))
	}
	if o.rate < 0 {
		errs = append(errs, fmt.Errorf("--rate %g: must not be negative", o.rate))
	}
	if o.maxInflight < 1 {
		errs = append(errs, fmt.Errorf("--max-inflight %d: must be at least 1", o.maxInflight))
	}
	payload, err := loadgen.ParsePayloadKind(o.payload)
	if err != nil {
		errs = append(errs, fmt.Errorf("--payload %q: want typical or array10", o.payload))
	}
	switch o.fsync {
	case node.FsyncDefault, node.FsyncAlways:
	default:
		errs = append(errs, fmt.Errorf("--fsync %q: want default or always", o.fsync))
	}
	switch o.peer {
	case "", "mosquitto":
	default:
		errs = append(errs, fmt.Errorf("--peer %q: the only peer is mosquitto", o.peer))
	}
	switch o.output {
	case "table", "json":
	default:
		errs = append(errs, fmt.Errorf("-o %q: want table or json", o.output))
	}
	return payload, errors.Join(errs...)
}

// benchSerials returns the serials of n bench gateways.
func benchSerials(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("TSGW06BNC%08d", i)
	}
	return s
}

// benchIotransit starts an in-process node in a temporary directory,
// provisions the gateways, runs the load and checks that every
// acknowledged message was stored.
func benchIotransit(ctx context.Context, o benchOptions, cfg loadgen.Config, logHandler slog.Handler, progress func(string, ...any)) (*systemReport, error) {
	dir, err := os.MkdirTemp(o.tmpDir, "iotransit-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: data directory: %w", err)
	}
	defer os.RemoveAll(dir)
	counter := loadgen.NewLogCounter(logHandler)
	ncfg := node.Config{
		DataDir: dir, MQTTAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Dev: true,
		Fsync: o.fsync, Logger: slog.New(counter),
	}
	// The per-gateway rate limit would throttle the load: lift it.
	ncfg.Ingest.MsgRate, ncfg.Ingest.MsgBurst = 1e9, 1e6
	progress("starting iotransit (fsync %s) in %s", o.fsync, dir)
	n, err := node.Start(ctx, ncfg)
	if err != nil {
		return nil, fmt.Errorf("bench: start node: %w", err)
	}
	defer n.Close()
	start := time.Now()
	gws, err := provision(ctx, n, benchSerials(o.gateways))
	if err != nil {
		return nil, err
	}
	progress("provisioned %d gateways in tenant %s in %s", len(gws), benchTenant, time.Since(start).Round(time.Millisecond))

	rep := &systemReport{Name: "iotransit", Fsync: o.fsync, LoadAvg: loadAvg()}
	res, err := loadgen.Run(ctx, loadgen.Target{Name: "iotransit", Addr: n.MQTTAddr(), Gateways: gws}, cfg)
	if err != nil {
		return nil, err
	}
	rep.Result = res
	if rep.Stored, err = checkStored(ctx, n, res); err != nil {
		return nil, err
	}
	logs := counter.Counts()
	rep.ServerLog = &logs
	if !rep.Stored.OK {
		progress("!!! DURABILITY BUG: %d messages acknowledged, only %d stored !!!", rep.Stored.Acked, rep.Stored.Stored)
	}
	return rep, nil
}

// provision registers the gateways in the bench tenant and issues each a
// certificate from a CSR, as a factory would.
func provision(ctx context.Context, n *node.Node, serials []string) ([]loadgen.Gateway, error) {
	if _, err := n.CreateTenant(ctx, benchTenant); err != nil {
		return nil, fmt.Errorf("bench: create tenant %s: %w", benchTenant, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(n.ServerCAPEM()) {
		return nil, errors.New("bench: no server CA")
	}
	gws := make([]loadgen.Gateway, len(serials))
	errs := make([]error, len(serials))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, serial := range serials {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			cert, err := enroll(ctx, n, serial)
			if err != nil {
				errs[i] = fmt.Errorf("bench: provision %s: %w", serial, err)
				return
			}
			gws[i] = loadgen.Gateway{Serial: serial, TLS: &tls.Config{
				MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert},
				RootCAs: pool, ServerName: "127.0.0.1",
			}}
		})
	}
	wg.Wait()
	return gws, errors.Join(errs...)
}

func enroll(ctx context.Context, n *node.Node, serial string) (*tls.Certificate, error) {
	if _, err := n.Registry().RegisterGateway(ctx, benchTenant, serial); err != nil {
		return nil, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.MakeCSR(key, serial)
	if err != nil {
		return nil, err
	}
	certPEM, _, err := n.Registry().IssueCertificate(ctx, benchTenant, serial, csr, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// checkStored compares the bench tenant's message stream with what was
// acknowledged.
func checkStored(ctx context.Context, n *node.Node, res *loadgen.Result) (*storedCheck, error) {
	name := store.MessageStream(benchTenant)
	st, err := n.JetStream().Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bench: stream %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: stream %s info: %w", name, err)
	}
	c := &storedCheck{Stream: name, Stored: info.State.Msgs, Acked: res.TotalMessagesAcked}
	c.OK = c.Stored >= uint64(max(c.Acked, 0))
	mfs, err := n.Metrics().Gather()
	if err != nil {
		return nil, fmt.Errorf("bench: gather metrics: %w", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "iotransit_ingest_messages_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" && l.GetValue() == "duplicate" {
						c.Duplicates += m.GetCounter().GetValue()
					}
					if l.GetName() == "outcome" && l.GetValue() == "rejected" {
						c.Rejected += m.GetCounter().GetValue()
					}
				}
			case "iotransit_ingest_publishes_refused_total":
				c.Refused += m.GetCounter().GetValue()
			}
		}
	}
	return c, nil
}

// benchMosquitto runs the same load against a mosquitto broker, or reports
// it skipped when mosquitto is not installed.
func benchMosquitto(ctx context.Context, o benchOptions, cfg loadgen.Config, progress func(string, ...any)) (*systemReport, error) {
	if _, err := loadgen.MosquittoBinary(); err != nil {
		progress("mosquitto not found: peer skipped (%v)", err)
		return &systemReport{Name: "mosquitto", Skipped: "mosquitto binary not found"}, nil
	}
	m, err := loadgen.StartMosquitto(ctx, benchSerials(o.gateways))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	progress("started %s on %s", m.Version, m.Addr())
	rep := &systemReport{Name: "mosquitto", Version: m.Version, LoadAvg: loadAvg()}
	res, err := loadgen.Run(ctx, m.Target(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%w\nmosquitto log:\n%s", err, m.Log())
	}
	rep.Result = res
	select {
	case <-m.Exited():
		return nil, fmt.Errorf("bench: mosquitto exited during the run:\n%s", m.Log())
	default:
	}
	if l := strings.TrimSpace(m.Log()); l != "" {
		progress("mosquitto log:\n%s", l)
	}
	return rep, nil
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

// commandLine returns the bench command as it could be typed again.
func commandLine(args []string) string {
	parts := []string{"iotransit", "bench"}
	for _, a := range args {
		if a == "" || strings.ContainsFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=.,:/+@", r))
		}) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func printBenchTable(w io.Writer, rep *benchReport) {
	s := rep.Settings
	mode := "closed loop (each gateway: next publish when the previous PUBACK arrives)"
	if s["rate"] != "0" {
		mode = "open loop at " + s["rate"] + " publishes/s in total (latency from the due time)"
	}
	fmt.Fprintf(w, "iotransit bench: %s %s, GOMAXPROCS=%d, NumCPU=%d\n", rep.GoVersion, rep.Platform, rep.GOMAXPROCS, rep.NumCPU)
	fmt.Fprintf(w, "command:  %s\n", rep.Command)
	fmt.Fprintf(w, "load:     %s gateways, %s; payload %s; warmup %s, measured %s; fsync %s\n",
		s["gateways"], mode, s["payload"], s["warmup"], s["duration"], s["fsync"])
	fmt.Fprintf(w, "note:     the in-process iotransit node and the load generator share this process;\n")
	fmt.Fprintf(w, "          a peer broker runs as its own process with the same client load.\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label string, f func(r *systemReport) string) {
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
	row("system", func(r *systemReport) string {
		if r.Version != "" {
			return r.Name + " (" + strings.TrimPrefix(r.Version, "mosquitto ") + ")"
		}
		return r.Name
	})
	row("load avg before (1/5/15m)", func(r *systemReport) string { return r.LoadAvg })
	row("CPU cores used: bench+server/others", func(r *systemReport) string {
		c := r.CPU
		if c == nil {
			return "n/a"
		}
		if c.Server > 0 {
			return fmt.Sprintf("%.2f+%.2f / %.2f of %d", c.Self, c.Server, c.Others, c.Cores)
		}
		return fmt.Sprintf("%.2f / %.2f of %d", c.Self, c.Others, c.Cores)
	})
	row("publishes acked (measured)", func(r *systemReport) string { return fmt.Sprintf("%d of %d sent", r.Acked, r.Sent) })
	row("publishes/s", func(r *systemReport) string { return fmt.Sprintf("%.0f", r.PublishesPerSecond) })
	row("Thingsee messages/s", func(r *systemReport) string { return fmt.Sprintf("%.0f", r.MessagesPerSecond) })
	for _, p := range []struct {
		label string
		f     func(loadgen.LatencySummary) float64
	}{
		{"latency p50", func(l loadgen.LatencySummary) float64 { return l.P50Ms }},
		{"latency p90", func(l loadgen.LatencySummary) float64 { return l.P90Ms }},
		{"latency p99", func(l loadgen.LatencySummary) float64 { return l.P99Ms }},
		{"latency p99.9", func(l loadgen.LatencySummary) float64 { return l.P999Ms }},
		{"latency max", func(l loadgen.LatencySummary) float64 { return l.MaxMs }},
	} {
		row(p.label, func(r *systemReport) string { return fmtMs(p.f(r.Latency)) })
	}
	if s["rate"] != "0" {
		row("send lag p50/p99 (generator)", func(r *systemReport) string {
			if r.SendLag == nil {
				return "-"
			}
			return fmtMs(r.SendLag.P50Ms) + " / " + fmtMs(r.SendLag.P99Ms)
		})
	}
	row("errors", func(r *systemReport) string {
		e := r.Errors
		if e.Total == 0 {
			return "0"
		}
		return fmt.Sprintf("%d (refused %d, timeouts %d, other %d, connections lost %d)", e.Total, e.Refused, e.Timeouts, e.Other, e.ConnectionsLost)
	})
	if s["rate"] != "0" {
		row("missed (due, not sent)", func(r *systemReport) string { return fmt.Sprint(r.Missed) })
	}
	row("PUBACK reason codes", func(r *systemReport) string {
		if len(r.ReasonCodes) == 0 {
			return "all 0x00"
		}
		var parts []string
		for _, c := range slices.Sorted(maps.Keys(r.ReasonCodes)) {
			parts = append(parts, fmt.Sprintf("%s×%d", c, r.ReasonCodes[c]))
		}
		return strings.Join(parts, " ")
	})
	row("stored == acked", func(r *systemReport) string {
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
	row("duplicates/rejected/refused", func(r *systemReport) string {
		if r.Stored == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f / %.0f / %.0f", r.Stored.Duplicates, r.Stored.Rejected, r.Stored.Refused)
	})
	row("server log (warn/error)", func(r *systemReport) string {
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
