package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	loadgen "github.com/iotransit/iotransit/internal/bench"
	"github.com/iotransit/iotransit/internal/cli"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/node"
)

// benchFlags are the flags of bench.
type benchFlags struct {
	opts     loadgen.Options
	cfg      loadgen.Config
	payload  string
	output   string
	logLevel string
	ext      externalFlags
	// serverPID is --server-pid, which --api-abuse shares.
	serverPID int
}

// externalFlags are the flags of the external bench (--mqtt): a server in
// another process, measured from outside.
type externalFlags struct {
	opts        loadgen.ExternalOptions
	caFile      string
	operatorKey *secretFlag
	// idle and storm are --idle and --storm (0: not that bench), tenants
	// --tenants.
	idle, storm, tenants int
	// receiverAddr is --receiver-addr (--forward).
	receiverAddr string
}

// benchTenantDefault is the tenant of the external bench's gateways.
const benchTenantDefault = "bench"

// addExternalFlags defines the flags of the external bench.
func addExternalFlags(fs *flag.FlagSet, e *externalFlags) {
	o := &e.opts
	fs.StringVar(&o.MQTTAddr, "mqtt", "", "measure the server at this MQTT `HOST:PORT` from outside (its own process) instead of an in-process node; needs --api, --ca and --operator-key-file")
	fs.StringVar(&o.APIURL, "api", "", "--mqtt: the server's management API `URL`, https://HOST:PORT (the gateways are provisioned through it)")
	fs.StringVar(&e.caFile, "ca", "", "--mqtt: PEM `FILE` of the CA that verifies the server (serve --dev: data/dev/gateways/*/ca.pem)")
	e.operatorKey = newSecretFlag(fs, "operator-key", "--mqtt: the operator key (prefer --operator-key-file)", "--mqtt: `FILE` holding the operator key, e.g. data/"+node.OperatorKeyFile)
	fs.StringVar(&o.Tenant, "tenant", benchTenantDefault, "--mqtt: the tenant of the bench gateways, created when absent (the stored check counts all its messages: give the bench its own)")
	fs.Var(listFlag{list: &o.SourceAddrs}, "source-addrs", "--mqtt: comma-separated local IPs the connections are spread over (default: enough loopback addresses 127.0.0.1, 127.0.0.2, ... for "+fmt.Sprint(loadgen.PortsPerSource)+" connections each)")
	fs.StringVar(&o.CacheDir, "cache-dir", "", "--mqtt: where the gateways' keys and certificates are kept for the next run (default: the user's cache directory, iotransit/bench)")
	fs.IntVar(&e.idle, "idle", 0, "--mqtt: connect `N` idle gateways instead, hold them for --duration, and report the server's memory per connection (RSS with --server-pid; Go heap+stacks and goroutines from its /metrics) and the connect time")
	fs.IntVar(&e.storm, "storm", 0, "--mqtt: `N` gateways connect at once after --duration of steady load (--gateways live gateways publishing --rate in all); reports the live publish latency before and during the storm (the live gateways publish from a process of their own) and that every storm gateway connected")
	fs.StringVar(&e.receiverAddr, "receiver-addr", "", "--mqtt --forward: `HOST:PORT` where the bench's HTTPS webhook receiver listens, HOST being how the server reaches it (default 127.0.0.1, a free port); the server must allow private targets for a loopback or private HOST (serve --dev does)")
	fs.IntVar(&e.tenants, "tenants", 0, fmt.Sprintf("--idle, --storm: tenants the gateways are spread over, each provisioning with an API key of its own (default: one per %d gateways; the server allows --max-conns-per-tenant each)", loadgen.TenantGateways))
}

// bench is "iotransit bench": flags to the load and what to measure, then
// internal/bench measures and reports.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if os.Getenv(loadgen.LiveChildEnv) == "1" && len(args) == 0 {
		// The live gateways of a storm bench, started by it (--storm).
		return loadgen.RunLiveChild(ctx, os.Stdin, stdout)
	}
	fs := newFlagSet("bench", "", stderr)
	var f benchFlags
	o, c := &f.opts, &f.cfg
	fs.IntVar(&o.Gateways, "gateways", 50, "concurrent gateways, each its own mTLS connection, serial and certificate")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "measured time")
	fs.DurationVar(&c.Warmup, "warmup", 3*time.Second, "load before measuring, not measured")
	fs.Float64Var(&c.Rate, "rate", 0, "publishes per second in total on an open-loop schedule (0: closed loop, each gateway one publish in flight)")
	fs.StringVar(&f.payload, "payload", string(loadgen.PayloadTypical), "typical (one Thingsee weather message, ~150 bytes) or array10 (an array of 10)")
	fs.StringVar(&o.Fsync, "fsync", node.FsyncDefault, "iotransit durability: default or always")
	fs.StringVar(&o.Peer, "peer", "", "also measure this broker with the same load afterwards: mosquitto")
	fs.StringVar(&f.output, "o", cli.FormatTable, cli.OutputUsage)
	fs.StringVar(&f.logLevel, "log-level", "warn", "iotransit server log level (debug, info, warn, error)")
	fs.IntVar(&c.MaxInflight, "max-inflight", 100, "open loop: publishes in flight per gateway at most")
	fs.IntVar(&c.Window, "window", 1, "closed loop: publishes each gateway keeps in flight (1: a real gateway's pace; more pipelines them on the connection, as mosquitto_pub -l does)")
	fs.StringVar(&o.TmpDir, "tmp-dir", "", "where the node's temporary data directory goes (default: the system's; put it on the disk to measure)")
	fs.StringVar(&o.Forward, "forward", "", "measure forwarding to an HTTPS receiver in this process instead: webhook (needs --rate: a steady phase at that rate, then, in-process only, a closed-loop throughput phase; with --mqtt the server of --mqtt forwards, through an integration the bench creates, trusting the receiver's CA for it alone)")
	fs.IntVar(&o.ForwardBatch, "forward-batch", 100, fmt.Sprintf("--forward: the integration's batch.maxMessages (1 to %d)", forward.MaxMaxMessages))
	fs.DurationVar(&o.ForwardWait, "forward-wait", 50*time.Millisecond, "--forward: the integration's batch.maxWait ("+waitBounds+")")
	fs.IntVar(&o.ForwardConcurrency, "forward-concurrency", 0, fmt.Sprintf("--forward: the integration's delivery.concurrency, its lanes (1 to %d; 0: the server's default, %d)", forward.MaxConcurrency, forward.DefaultConcurrency))
	addExternalFlags(fs, &f.ext)
	abuse := addAbuseFlags(fs)
	pos, onCmdLine, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("unexpected argument %q", pos[0])
	}
	if abuse.on {
		return abuse.run(ctx, c.Duration, f.output, stdout, stderr)
	}
	f.serverPID = abuse.cfg.PID // one --server-pid for both
	if err := f.validate(onCmdLine); err != nil {
		return err
	}
	settings := map[string]string{}
	fs.VisitAll(func(fl *flag.Flag) {
		if !strings.Contains(fl.Name, "operator-key") { // no secret in the report
			settings[fl.Name] = fl.Value.String()
		}
	})
	c.Progress = func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }
	switch {
	case f.ext.idle > 0:
		return f.idle(ctx, commandLine(args), settings, stdout)
	case f.ext.storm > 0:
		return f.stormBench(ctx, commandLine(args), settings, stdout)
	case f.ext.opts.MQTTAddr != "" && o.Forward != "":
		return f.externalForward(ctx, commandLine(args), settings, stdout)
	case f.ext.opts.MQTTAddr != "":
		return f.external(ctx, commandLine(args), settings, stdout)
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	o.Log = log.Handler()
	rep := loadgen.NewReport(commandLine(args), settings)
	failures, err := loadgen.Measure(ctx, rep, f.opts, f.cfg)
	if err != nil {
		return err
	}
	switch {
	case f.output != cli.FormatTable:
		if err := cli.PrintData(stdout, f.output, rep); err != nil {
			return err
		}
	case o.Forward != "":
		rep.WriteForwardTable(stdout)
	default:
		rep.WriteTable(stdout)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("bench interrupted: %w", ctx.Err())
	}
	return errors.Join(failures...)
}

// waitBounds are the bounds of an integration's batch.maxWait.
var waitBounds = shortDuration(time.Duration(forward.MinMaxWait)) + " to " + shortDuration(time.Duration(forward.MaxMaxWait))

// external measures the server of --mqtt from outside and reports.
func (f *benchFlags) external(ctx context.Context, command string, settings map[string]string, stdout io.Writer) error {
	rep, failures, err := loadgen.MeasureExternal(ctx, loadgen.NewHeader(loadgen.ModeExternal, command, settings), f.ext.opts, f.cfg)
	if err != nil {
		return err
	}
	return f.finish(ctx, stdout, rep, failures)
}

// externalForward measures the forwarding of the server of --mqtt from
// outside and reports.
func (f *benchFlags) externalForward(ctx context.Context, command string, settings map[string]string, stdout io.Writer) error {
	rep, failures, err := loadgen.MeasureExternalForward(ctx, loadgen.NewHeader(loadgen.ModeExternal, command, settings),
		loadgen.ExternalForwardOptions{Server: f.ext.opts, Forward: f.opts, ReceiverAddr: f.ext.receiverAddr}, f.cfg)
	if err != nil {
		return err
	}
	return f.finish(ctx, stdout, rep, failures)
}

// finish prints the report of a measurement and returns what fails the
// run: an interruption, else the problems it found.
func (f *benchFlags) finish(ctx context.Context, stdout io.Writer, rep interface{ WriteTable(io.Writer) }, failures []error) error {
	if err := f.print(stdout, rep); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("bench interrupted: %w", ctx.Err())
	}
	return errors.Join(failures...)
}

// print writes a report of the external benches as -o asks: a table, or
// data.
func (f *benchFlags) print(stdout io.Writer, rep interface{ WriteTable(io.Writer) }) error {
	if f.output != cli.FormatTable {
		return cli.PrintData(stdout, f.output, rep)
	}
	rep.WriteTable(stdout)
	return nil
}

// idle runs the idle bench (--idle) against the server of --mqtt.
func (f *benchFlags) idle(ctx context.Context, command string, settings map[string]string, stdout io.Writer) error {
	rep, err := loadgen.MeasureIdle(ctx, loadgen.NewHeader(loadgen.ModeExternal, command, settings), loadgen.IdleOptions{
		Server: f.ext.opts, Gateways: f.ext.idle, Tenants: f.ext.tenants, Hold: f.cfg.Duration, Progress: f.cfg.Progress,
	})
	if err != nil {
		return err
	}
	if err := f.print(stdout, rep); err != nil {
		return err
	}
	if rep.Failed > 0 || rep.Alive < rep.Connected {
		return fmt.Errorf("bench: %d of %d idle gateways did not connect, %d of %d connected were gone at the end", rep.Failed, rep.Gateways, rep.Connected-rep.Alive, rep.Connected)
	}
	return nil
}

// stormBench runs the storm bench (--storm) against the server of --mqtt.
func (f *benchFlags) stormBench(ctx context.Context, command string, settings map[string]string, stdout io.Writer) error {
	rep, err := loadgen.MeasureStorm(ctx, loadgen.NewHeader(loadgen.ModeExternal, command, settings), loadgen.StormOptions{
		Server: f.ext.opts, Live: f.opts.Gateways, Rate: f.cfg.Rate, Storm: f.ext.storm, Quiet: f.cfg.Duration,
		Tenants: f.ext.tenants, Progress: f.cfg.Progress,
	})
	if err != nil {
		return err
	}
	if err := f.print(stdout, rep); err != nil {
		return err
	}
	if rep.StormFailed > 0 {
		return fmt.Errorf("bench: %d of %d storm gateways never connected", rep.StormFailed, rep.Storm)
	}
	return nil
}

// validateExternal checks the flags of --mqtt and reads the CA and the
// operator key; flags of the in-process node given with it are errors.
func (f *benchFlags) validateExternal(onCmdLine map[string]bool) []error {
	e := &f.ext
	o := &e.opts
	var errs []error
	if o.MQTTAddr == "" {
		for _, name := range []string{"api", "ca", "operator-key", "operator-key-file", "source-addrs", "cache-dir", "idle", "storm", "tenants", "receiver-addr"} {
			if onCmdLine[name] {
				errs = append(errs, fmt.Errorf("--%s is for the external bench: give --mqtt too", name))
			}
		}
		return errs
	}
	for _, name := range []string{"fsync", "tmp-dir", "log-level"} {
		if onCmdLine[name] {
			errs = append(errs, fmt.Errorf("--%s is for the in-process node: with --mqtt, set it on the server (iotransit serve)", name))
		}
	}
	if _, _, err := net.SplitHostPort(o.MQTTAddr); err != nil {
		errs = append(errs, fmt.Errorf("--mqtt %q: want HOST:PORT", o.MQTTAddr))
	}
	if o.APIURL == "" {
		errs = append(errs, errors.New("--mqtt needs --api: the server's management API, https://HOST:PORT"))
	} else if _, err := client.ParseServerURL(o.APIURL); err != nil {
		errs = append(errs, fmt.Errorf("--api: %v", err))
	}
	if e.caFile == "" {
		errs = append(errs, errors.New("--mqtt needs --ca: the CA that verifies the server"))
	} else {
		var err error
		if o.CAPEM, err = os.ReadFile(e.caFile); err != nil {
			errs = append(errs, fmt.Errorf("--ca: %w", err))
		}
	}
	var err error
	if o.OperatorKey, err = e.operatorKey.Need(onCmdLine); err != nil {
		errs = append(errs, err)
	}
	switch {
	case strings.TrimSpace(o.Tenant) == "":
		errs = append(errs, errors.New("--tenant must not be empty"))
	case !onCmdLine["tenant"] && o.Tenant != benchTenantDefault:
		// IOTRANSIT_TENANT is usually set for the admin commands: the
		// bench must not register its gateways in that tenant unasked.
		errs = append(errs, fmt.Errorf("--tenant: %s names tenant %s; the bench registers its gateways in its tenant and counts all its messages: give --tenant %s on the command line to bench it", envVar("tenant"), o.Tenant, o.Tenant))
	}
	switch {
	case e.idle < 0 || e.idle > 100000:
		errs = append(errs, fmt.Errorf("--idle %d: want 1 to 100000", e.idle))
	case e.storm < 0 || e.storm > 100000:
		errs = append(errs, fmt.Errorf("--storm %d: want 1 to 100000", e.storm))
	case e.idle > 0 && e.storm > 0:
		errs = append(errs, errors.New("--idle and --storm: run them apart"))
	case e.storm > 0 && f.cfg.Rate <= 0:
		errs = append(errs, errors.New("--storm needs --rate: the live gateways' publishes per second in total"))
	case (e.idle > 0 || e.storm > 0) && f.opts.Peer != "":
		errs = append(errs, errors.New("--peer is for the load bench, not --idle or --storm"))
	case (e.idle > 0 || e.storm > 0) && f.opts.Forward != "":
		errs = append(errs, errors.New("--forward is a bench of its own, not with --idle or --storm"))
	case e.receiverAddr != "" && f.opts.Forward == "":
		errs = append(errs, errors.New("--receiver-addr is for --forward"))
	}
	if a := e.receiverAddr; a != "" {
		if host, _, err := net.SplitHostPort(a); err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
			errs = append(errs, fmt.Errorf("--receiver-addr %q: want HOST:PORT, HOST the name or address the server reaches the receiver by (not a wildcard)", a))
		}
	}
	if e.tenants < 0 || e.tenants > 1000 {
		errs = append(errs, fmt.Errorf("--tenants %d: want 1 to 1000 (0: one per %d gateways)", e.tenants, loadgen.TenantGateways))
	}
	for _, a := range o.SourceAddrs {
		if net.ParseIP(a) == nil {
			errs = append(errs, fmt.Errorf("--source-addrs: %q is not an IP address", a))
		}
	}
	if pid := f.serverPID; pid < 0 {
		errs = append(errs, fmt.Errorf("--server-pid %d: want a process id", pid))
	} else if pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			errs = append(errs, fmt.Errorf("--server-pid %d: no such process (%v)", pid, err))
		}
	}
	o.ServerPID = f.serverPID
	if o.CacheDir == "" {
		o.CacheDir = loadgen.DefaultCacheDir()
	}
	o.Gateways, o.Peer = f.opts.Gateways, f.opts.Peer
	return errs
}

// validate checks the flags, every problem at once, and sets the payload.
func (f *benchFlags) validate(onCmdLine map[string]bool) error {
	o, c := &f.opts, &f.cfg
	errs := f.validateExternal(onCmdLine)
	if o.Gateways < 1 || o.Gateways > 100000 {
		errs = append(errs, fmt.Errorf("--gateways %d: want 1 to 100000", o.Gateways))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %s: must be positive", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup %s: must not be negative", c.Warmup))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("--rate %g: must not be negative", c.Rate))
	}
	if c.Window < 1 || c.Window > 65535 {
		errs = append(errs, fmt.Errorf("--window %d: want 1 to 65535 (MQTT's receive maximum)", c.Window))
	}
	if c.MaxInflight < 1 {
		errs = append(errs, fmt.Errorf("--max-inflight %d: must be at least 1", c.MaxInflight))
	}
	var err error
	if c.Payload, err = loadgen.ParsePayloadKind(f.payload); err != nil {
		errs = append(errs, fmt.Errorf("--payload %q: want typical or array10", f.payload))
	}
	switch o.Fsync {
	case node.FsyncDefault, node.FsyncAlways:
	default:
		errs = append(errs, fmt.Errorf("--fsync %q: want default or always", o.Fsync))
	}
	switch o.Peer {
	case "", "mosquitto":
	default:
		errs = append(errs, fmt.Errorf("--peer %q: the only peer is mosquitto", o.Peer))
	}
	if err := cli.CheckFormat(f.output); err != nil {
		errs = append(errs, err)
	}
	switch o.Forward {
	case "":
		for _, name := range []string{"forward-batch", "forward-wait", "forward-concurrency"} {
			if onCmdLine[name] {
				errs = append(errs, fmt.Errorf("--%s is the forward bench's integration setting: give --forward webhook too", name))
			}
		}
	case client.IntegrationWebhook:
		if c.Rate <= 0 {
			errs = append(errs, errors.New("--forward needs --rate: the steady phase's publishes per second in total"))
		}
		if o.Peer != "" {
			errs = append(errs, fmt.Errorf("--forward and --peer %s: a peer broker does not forward; measure them apart", o.Peer))
		}
	default:
		errs = append(errs, fmt.Errorf("--forward %q: the only forwarding measured is webhook", o.Forward))
	}
	if o.ForwardConcurrency < 0 || o.ForwardConcurrency > forward.MaxConcurrency {
		errs = append(errs, fmt.Errorf("--forward-concurrency %d: want 0 to %d", o.ForwardConcurrency, forward.MaxConcurrency))
	}
	if o.ForwardBatch < 1 || o.ForwardBatch > forward.MaxMaxMessages {
		errs = append(errs, fmt.Errorf("--forward-batch %d: want 1 to %d", o.ForwardBatch, forward.MaxMaxMessages))
	}
	if w := forward.Duration(o.ForwardWait); w < forward.MinMaxWait || w > forward.MaxMaxWait {
		errs = append(errs, fmt.Errorf("--forward-wait %s: want %s", o.ForwardWait, waitBounds))
	}
	return errors.Join(errs...)
}

// commandLine returns the bench command as it could be typed again.
// The value of --operator-key is shown as REDACTED: reports are shared.
func commandLine(args []string) string {
	parts := []string{"iotransit", "bench"}
	secret := func(a string) bool { return a == "-operator-key" || a == "--operator-key" }
	for i, a := range args {
		switch name, _, hasValue := strings.Cut(a, "="); {
		case secret(name) && hasValue:
			a = name + "=REDACTED"
		case i > 0 && secret(args[i-1]):
			a = "REDACTED"
		}
		if a == "" || strings.ContainsFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=.,:/+@", r))
		}) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
