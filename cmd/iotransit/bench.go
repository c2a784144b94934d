package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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
}

// bench is "iotransit bench": flags to the load and what to measure, then
// internal/bench measures and reports.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	fs.StringVar(&o.TmpDir, "tmp-dir", "", "where the node's temporary data directory goes (default: the system's; put it on the disk to measure)")
	fs.StringVar(&o.Forward, "forward", "", "measure forwarding to an in-process HTTPS receiver instead: webhook (needs --rate: a steady phase at that rate, then a closed-loop throughput phase)")
	fs.IntVar(&o.ForwardBatch, "forward-batch", 100, fmt.Sprintf("--forward: the integration's batch.maxMessages (1 to %d)", forward.MaxMaxMessages))
	fs.DurationVar(&o.ForwardWait, "forward-wait", 50*time.Millisecond, "--forward: the integration's batch.maxWait ("+waitBounds+")")
	abuse := addAbuseFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if abuse.on {
		return abuse.run(ctx, c.Duration, f.output, stdout, stderr)
	}
	if err := f.validate(); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	o.Log = log.Handler()
	c.Progress = func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }

	settings := map[string]string{}
	fs.VisitAll(func(fl *flag.Flag) { settings[fl.Name] = fl.Value.String() })
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

// validate checks the flags, every problem at once, and sets the payload.
func (f *benchFlags) validate() error {
	o, c := &f.opts, &f.cfg
	var errs []error
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
	if o.ForwardBatch < 1 || o.ForwardBatch > forward.MaxMaxMessages {
		errs = append(errs, fmt.Errorf("--forward-batch %d: want 1 to %d", o.ForwardBatch, forward.MaxMaxMessages))
	}
	if w := forward.Duration(o.ForwardWait); w < forward.MinMaxWait || w > forward.MaxMaxWait {
		errs = append(errs, fmt.Errorf("--forward-wait %s: want %s", o.ForwardWait, waitBounds))
	}
	return errors.Join(errs...)
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
