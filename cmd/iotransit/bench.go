package main

import (
	"context"
	"crypto"
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

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	loadgen "github.com/iotransit/iotransit/internal/bench"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
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
	// The forward benchmark (--forward): integration type, batching.
	forward      string
	forwardBatch int
	forwardWait  time.Duration
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
	// Forward is what a receiver got of the run's messages (--forward).
	Forward *loadgen.ForwardResult `json:"forward,omitempty"`
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
	fs.StringVar(&o.forward, "forward", "", "measure forwarding to an in-process HTTPS receiver instead: webhook (needs --rate: a steady phase at that rate, then a closed-loop throughput phase)")
	fs.IntVar(&o.forwardBatch, "forward-batch", 100, "--forward: the integration's batch.maxMessages (1 to 1000)")
	fs.DurationVar(&o.forwardWait, "forward-wait", 50*time.Millisecond, "--forward: the integration's batch.maxWait (10ms to 1m)")
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
	if o.forward != "" {
		reports, errs, err := benchForward(ctx, o, cfg, log.Handler(), progress)
		if err != nil {
			return err
		}
		rep.Results, failures = reports, errs
		for _, r := range reports {
			if r.Stored != nil && !r.Stored.OK {
				failures = append(failures, fmt.Errorf("DURABILITY: iotransit acknowledged %d messages but stored %d", r.Stored.Acked, r.Stored.Stored))
			}
		}
	} else {
		it, err := benchIotransit(ctx, o, cfg, log.Handler(), progress)
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, it)
		if it.Stored != nil && !it.Stored.OK {
			failures = append(failures, fmt.Errorf("DURABILITY: iotransit acknowledged %d messages but stored %d", it.Stored.Acked, it.Stored.Stored))
		}
	}
	if o.peer != "" && ctx.Err() == nil {
		p, err := benchMosquitto(ctx, o, cfg, progress)
		if err != nil {
			failures = append(failures, err)
			p = &systemReport{Name: "mosquitto", Skipped: "failed: " + err.Error()}
		}
		rep.Results = append(rep.Results, p)
		if it := rep.Results[0]; p.Result != nil && p.Acked > 0 && it.Result != nil && it.Acked > 0 {
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
	} else if o.forward != "" {
		printForwardTable(stdout, rep)
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
	switch o.forward {
	case "":
	case "webhook":
		if o.rate <= 0 {
			errs = append(errs, errors.New("--forward needs --rate: the steady phase's publishes per second in total"))
		}
		if o.peer != "" {
			errs = append(errs, fmt.Errorf("--forward and --peer %s: a peer broker does not forward; measure them apart", o.peer))
		}
	default:
		errs = append(errs, fmt.Errorf("--forward %q: the only forwarding measured is webhook", o.forward))
	}
	if o.forwardBatch < 1 || o.forwardBatch > 1000 {
		errs = append(errs, fmt.Errorf("--forward-batch %d: want 1 to 1000", o.forwardBatch))
	}
	if o.forwardWait < 10*time.Millisecond || o.forwardWait > time.Minute {
		errs = append(errs, fmt.Errorf("--forward-wait %s: want 10ms to 1m", o.forwardWait))
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
	bn, err := startBenchNode(ctx, o, logHandler, progress)
	if err != nil {
		return nil, err
	}
	defer bn.close()
	n, counter := bn.n, bn.counter

	rep := &systemReport{Name: "iotransit", Fsync: o.fsync, LoadAvg: loadAvg()}
	res, err := loadgen.Run(ctx, loadgen.Target{Name: "iotransit", Addr: n.MQTTAddr(), Gateways: bn.gws}, cfg)
	if err != nil {
		return nil, err
	}
	rep.Result = res
	if rep.Stored, err = checkStored(ctx, n, res.TotalMessagesAcked); err != nil {
		return nil, err
	}
	logs := counter.Counts()
	rep.ServerLog = &logs
	if !rep.Stored.OK {
		progress("!!! DURABILITY BUG: %d messages acknowledged, only %d stored !!!", rep.Stored.Acked, rep.Stored.Stored)
	}
	return rep, nil
}

// benchNode is an in-process node in a temporary directory with the bench
// gateways provisioned.
type benchNode struct {
	n       *node.Node
	counter *loadgen.LogCounter
	gws     []loadgen.Gateway
	close   func()
}

// startBenchNode starts a development node (loopback integration targets
// allowed) without the per-gateway rate limit and provisions the gateways.
func startBenchNode(ctx context.Context, o benchOptions, logHandler slog.Handler, progress func(string, ...any)) (_ *benchNode, err error) {
	dir, err := os.MkdirTemp(o.tmpDir, "iotransit-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: data directory: %w", err)
	}
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
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start node: %w", err)
	}
	bn := &benchNode{n: n, counter: counter, close: func() { n.Close(); _ = os.RemoveAll(dir) }}
	defer func() {
		if err != nil {
			bn.close()
		}
	}()
	start := time.Now()
	if bn.gws, err = provision(ctx, n, benchSerials(o.gateways)); err != nil {
		return nil, err
	}
	progress("provisioned %d gateways in tenant %s in %s", len(bn.gws), benchTenant, time.Since(start).Round(time.Millisecond))
	return bn, nil
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
	return pki.NewKeyPair(serial, func(_ crypto.Signer, csr []byte) ([]byte, error) {
		certPEM, _, err := n.Registry().IssueCertificate(ctx, benchTenant, serial, csr, 24*time.Hour)
		return certPEM, err
	})
}

// checkStored compares the bench tenant's message stream with the Thingsee
// messages acknowledged since the node started.
func checkStored(ctx context.Context, n *node.Node, acked int64) (*storedCheck, error) {
	name := names.MessageStream(benchTenant)
	st, err := n.JetStream().Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("bench: stream %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: stream %s info: %w", name, err)
	}
	c := &storedCheck{Stream: name, Stored: info.State.Msgs, Acked: acked}
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

// forwardDrainLimit is how long a forward phase waits after its load for
// the acknowledged messages still on their way to arrive.
const forwardDrainLimit = 30 * time.Second

// forwardPhase is one measurement of the forward benchmark.
type forwardPhase struct {
	name string
	// rate is the open-loop rate; 0 runs a closed loop.
	rate float64
}

// benchForward measures forwarding: an in-process node forwards every
// message the gateways publish to a webhook receiver in this process,
// first at the steady --rate (open loop), then as fast as the gateways
// publish (closed loop), each phase through its own integration. It
// returns a report per phase and the problems that make the run fail.
func benchForward(ctx context.Context, o benchOptions, cfg loadgen.Config, logHandler slog.Handler, progress func(string, ...any)) ([]*systemReport, []error, error) {
	bn, err := startBenchNode(ctx, o, logHandler, progress)
	if err != nil {
		return nil, nil, err
	}
	defer bn.close()
	recv, err := loadgen.StartWebhookReceiver()
	if err != nil {
		return nil, nil, err
	}
	defer recv.Close()
	api, err := client.New(client.Config{Server: bn.n.APIAddr(), CAPEM: bn.n.ServerCAPEM(), Credential: bn.n.OperatorKey()})
	if err != nil {
		return nil, nil, err
	}
	defer api.Close()

	var reports []*systemReport
	var failures []error
	var acked int64 // Thingsee messages acknowledged since the node started
	for _, ph := range []forwardPhase{{"steady", o.rate}, {"throughput", 0}} {
		if ctx.Err() != nil {
			break
		}
		rep, errs, err := benchForwardPhase(ctx, o, cfg, bn, recv, api, ph, &acked, progress)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: forward %s phase: %w", ph.name, err)
		}
		reports = append(reports, rep)
		failures = append(failures, errs...)
	}
	if n := recv.Stray(); n > 0 {
		failures = append(failures, fmt.Errorf("FORWARD: the receiver got %d requests on no integration's path", n))
	}
	return reports, failures, nil
}

// benchForwardPhase creates a webhook integration to the receiver, runs the
// phase's load, waits up to forwardDrainLimit for the rest to arrive and
// deletes the integration again.
func benchForwardPhase(ctx context.Context, o benchOptions, cfg loadgen.Config, bn *benchNode, recv *loadgen.WebhookReceiver,
	api *client.Client, ph forwardPhase, acked *int64, progress func(string, ...any)) (*systemReport, []error, error) {
	trace := loadgen.NewForwardTrace(len(bn.gws), cfg.Payload.Messages())
	path := "/hook/" + ph.name
	integ, err := loadgen.CreateWebhook(ctx, api, benchTenant, "bench-"+ph.name, recv.URL(path), recv.CAPEM, o.forwardBatch, o.forwardWait)
	if err != nil {
		return nil, nil, err
	}
	if err := recv.Route(path, trace, integ.Secret); err != nil {
		return nil, nil, err
	}
	progress("%s: webhook integration %s to %s, batches of at most %d messages or %s", ph.name, integ.ID, recv.URL(path), o.forwardBatch, o.forwardWait)
	logsBefore := bn.counter.Counts()

	// A run's payloads are made of its publish numbers, which start at 0
	// each run, and of the second of the publish (tsmTs): a message of this
	// phase repeating one of the previous phase's last second would be
	// stored once, as a duplicate. Start in a new second.
	if !sleepCtx(ctx, time.Until(time.Now().Truncate(time.Second).Add(time.Second))) {
		return nil, nil, ctx.Err()
	}
	cfg.Rate, cfg.Tracker = ph.rate, trace
	rep := &systemReport{Name: "iotransit", Fsync: o.fsync, LoadAvg: loadAvg()}
	res, err := loadgen.Run(ctx, loadgen.Target{Name: "iotransit", Addr: bn.n.MQTTAddr(), Gateways: bn.gws}, cfg)
	if err != nil {
		return nil, nil, err
	}
	rep.Result = res
	var failures []error
	atEnd, err := loadgen.ReadIntegration(ctx, api, benchTenant, integ.ID)
	if err != nil {
		failures = append(failures, err)
	}
	if atEnd != nil {
		progress("%s: load done; the integration's backlog is %d messages; waiting up to %s for every acknowledged message to arrive", ph.name, atEnd.Backlog, forwardDrainLimit)
	}
	drained, waited := trace.WaitDelivered(ctx, forwardDrainLimit)
	// The node acknowledges a batch and saves the integration's state after
	// the receiver answered: give it a moment to show everything delivered.
	var after *loadgen.IntegrationStatus
	for settle := time.Now().Add(2 * time.Second); ; {
		arrived, _ := trace.Progress()
		if after, err = loadgen.ReadIntegration(ctx, api, benchTenant, integ.ID); err != nil {
			failures = append(failures, err)
			break
		}
		if !drained || after.Backlog == 0 && after.State.Delivered >= uint64(arrived) || time.Now().After(settle) {
			break
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			break
		}
	}
	fr := trace.Result(res.WindowStart, res.WindowEnd)
	fr.Phase, fr.Type, fr.BatchMaxMessages, fr.BatchMaxWait = ph.name, o.forward, o.forwardBatch, o.forwardWait.String()
	fr.WaitedSeconds, fr.Drained, fr.AtLoadEnd, fr.AfterWait = waited.Seconds(), drained, atEnd, after
	rep.Forward = fr

	*acked += res.TotalMessagesAcked
	if rep.Stored, err = checkStored(ctx, bn.n, *acked); err != nil {
		return nil, nil, err
	}
	logs := subtractLogs(bn.counter.Counts(), logsBefore)
	rep.ServerLog = &logs
	if err := api.DeleteIntegration(ctx, benchTenant, integ.ID); err != nil {
		failures = append(failures, err)
	}

	// What makes the run fail, said loudly.
	fail := func(format string, a ...any) {
		err := fmt.Errorf("FORWARD %s: "+format, append([]any{ph.name}, a...)...)
		progress("!!! %v !!!", err)
		failures = append(failures, err)
	}
	var backlog, dead uint64
	if after != nil {
		backlog, dead = after.Backlog, after.DeadLetters
	}
	switch {
	case fr.Missing == 0:
	case ph.rate > 0:
		fail("%d of %d acknowledged messages did not arrive within %s after the load (backlog %d, dead letters %d)",
			fr.Missing, fr.Acked, forwardDrainLimit, backlog, dead)
	case uint64(fr.Missing) > backlog:
		fail("%d acknowledged messages did not arrive within %s after the load and only %d are in the backlog (dead letters %d)",
			fr.Missing, forwardDrainLimit, backlog, dead)
	default:
		progress("%s: %d messages still in the backlog %s after the load: forwarding is slower than ingest", ph.name, fr.Missing, forwardDrainLimit)
	}
	if fr.SignatureFailures > 0 {
		fail("%d requests failed the Standard Webhooks signature check", fr.SignatureFailures)
	}
	if fr.Unknown > 0 || fr.BadRequests > 0 {
		fail("%d received messages match no publish and %d requests were not a JSON array", fr.Unknown, fr.BadRequests)
	}
	if fr.Duplicates > 0 {
		progress("%s: %d duplicate deliveries (at-least-once redelivery)", ph.name, fr.Duplicates)
	}
	return rep, failures, nil
}

// sleepCtx waits d; it reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// subtractLogs returns the warnings and errors logged after before was taken.
func subtractLogs(now, before loadgen.LogCounts) loadgen.LogCounts {
	d := loadgen.LogCounts{Warnings: now.Warnings - before.Warnings, Errors: now.Errors - before.Errors, Messages: map[string]int{}}
	for k, v := range now.Messages {
		if v -= before.Messages[k]; v > 0 {
			d.Messages[k] = v
		}
	}
	return d
}

func printForwardTable(w io.Writer, rep *benchReport) {
	s := rep.Settings
	fmt.Fprintf(w, "iotransit bench --forward %s: %s %s, GOMAXPROCS=%d, NumCPU=%d\n", s["forward"], rep.GoVersion, rep.Platform, rep.GOMAXPROCS, rep.NumCPU)
	fmt.Fprintf(w, "command:  %s\n", rep.Command)
	fmt.Fprintf(w, "load:     %s gateways; payload %s; warmup %s, measured %s; fsync %s\n", s["gateways"], s["payload"], s["warmup"], s["duration"], s["fsync"])
	fmt.Fprintf(w, "forward:  a %s integration per phase to an HTTPS receiver in this process; batches of at most %s messages or %s\n", s["forward"], s["forward-batch"], s["forward-wait"])
	fmt.Fprintf(w, "note:     the node, the gateways and the receiver share this process; e2e latency is from the\n")
	fmt.Fprintf(w, "          publish (payload handed to the MQTT client) to the receipt of the whole webhook request.\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(label string, f func(r *systemReport, fr *loadgen.ForwardResult) string) {
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
	row("phase", func(_ *systemReport, fr *loadgen.ForwardResult) string { return fr.Phase })
	row("load", func(r *systemReport, _ *loadgen.ForwardResult) string {
		if r.Mode == "open-loop" {
			return fmt.Sprintf("open loop, %g publishes/s", r.TargetRate)
		}
		return "closed loop, 1 in flight per gateway"
	})
	row("load avg before (1/5/15m)", func(r *systemReport, _ *loadgen.ForwardResult) string { return r.LoadAvg })
	row("CPU cores used: process/others", func(r *systemReport, _ *loadgen.ForwardResult) string {
		if c := r.CPU; c != nil {
			return fmt.Sprintf("%.2f / %.2f of %d", c.Self, c.Others, c.Cores)
		}
		return "n/a"
	})
	row("ingest: Thingsee messages/s", func(r *systemReport, _ *loadgen.ForwardResult) string {
		return fmt.Sprintf("%.0f", r.MessagesPerSecond)
	})
	row("ingest: PUBACK latency p50 / p99", func(r *systemReport, _ *loadgen.ForwardResult) string {
		return fmtMs(r.Latency.P50Ms) + " / " + fmtMs(r.Latency.P99Ms)
	})
	row("forward: delivered messages/s", func(_ *systemReport, fr *loadgen.ForwardResult) string {
		return fmt.Sprintf("%.0f", fr.DeliveredPerSecond)
	})
	row("forward: batches, mean / max size", func(_ *systemReport, fr *loadgen.ForwardResult) string {
		return fmt.Sprintf("%d, %.1f / %d", fr.Batches, fr.MeanBatch, fr.MaxBatch)
	})
	for _, p := range []struct {
		label string
		f     func(loadgen.LatencySummary) float64
	}{
		{"e2e latency p50", func(l loadgen.LatencySummary) float64 { return l.P50Ms }},
		{"e2e latency p90", func(l loadgen.LatencySummary) float64 { return l.P90Ms }},
		{"e2e latency p99", func(l loadgen.LatencySummary) float64 { return l.P99Ms }},
		{"e2e latency max", func(l loadgen.LatencySummary) float64 { return l.MaxMs }},
	} {
		row(p.label, func(_ *systemReport, fr *loadgen.ForwardResult) string { return fmtMs(p.f(fr.E2E)) })
	}
	row("  of it tsmCloudTs→receiver p50 / p99", func(_ *systemReport, fr *loadgen.ForwardResult) string {
		return fmtMs(fr.CloudToReceiver.P50Ms) + " / " + fmtMs(fr.CloudToReceiver.P99Ms)
	})
	row("not yet received at window end", func(_ *systemReport, fr *loadgen.ForwardResult) string {
		v := fmt.Sprint(fr.PendingAtWindowEnd)
		if fr.AtLoadEnd != nil {
			v += fmt.Sprintf(" (API backlog after the load: %d)", fr.AtLoadEnd.Backlog)
		}
		return v
	})
	row("published / acked / arrived", func(_ *systemReport, fr *loadgen.ForwardResult) string {
		return fmt.Sprintf("%d / %d / %d", fr.Published, fr.Acked, fr.Arrived)
	})
	row("missing (acked, not arrived)", func(_ *systemReport, fr *loadgen.ForwardResult) string {
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
	row("duplicates / retried batches", func(_ *systemReport, fr *loadgen.ForwardResult) string {
		return fmt.Sprintf("%d / %d", fr.Duplicates, fr.RetriedBatches)
	})
	row("signature failures", func(_ *systemReport, fr *loadgen.ForwardResult) string { return fmt.Sprint(fr.SignatureFailures) })
	row("unknown messages / bad requests", func(_ *systemReport, fr *loadgen.ForwardResult) string {
		return fmt.Sprintf("%d / %d", fr.Unknown, fr.BadRequests)
	})
	row("API: failed attempts / dead letters", func(_ *systemReport, fr *loadgen.ForwardResult) string {
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
	row("ingest errors", func(r *systemReport, _ *loadgen.ForwardResult) string {
		if e := r.Errors; e.Total > 0 {
			return fmt.Sprintf("%d (refused %d, timeouts %d, other %d, connections lost %d)", e.Total, e.Refused, e.Timeouts, e.Other, e.ConnectionsLost)
		}
		return "0"
	})
	row("stored == acked (cumulative)", func(r *systemReport, _ *loadgen.ForwardResult) string {
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
	row("ingest duplicates/rejected/refused", func(r *systemReport, _ *loadgen.ForwardResult) string {
		if r.Stored == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f / %.0f / %.0f", r.Stored.Duplicates, r.Stored.Rejected, r.Stored.Refused)
	})
	row("server log (warn/error)", func(r *systemReport, _ *loadgen.ForwardResult) string {
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
