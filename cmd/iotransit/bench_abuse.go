package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	loadgen "github.com/iotransit/iotransit/internal/bench"
	"github.com/iotransit/iotransit/internal/cli"
	"github.com/iotransit/iotransit/internal/node"
)

// abuseFlags are the flags of "bench --api-abuse": the management API's
// costly reads, measured against a running "serve --dev" process (of any
// version: the measurement speaks only the public API and MQTT).
type abuseFlags struct {
	on      bool
	dataDir string
	cfg     loadgen.AbuseConfig
}

func addAbuseFlags(fs *flag.FlagSet) *abuseFlags {
	a := &abuseFlags{}
	c := &a.cfg
	fs.BoolVar(&a.on, "api-abuse", false, "measure the management API's costly reads against a running serve --dev process instead (--server-pid; --duration is each latency window)")
	fs.StringVar(&a.dataDir, "data-dir", "data", "--api-abuse: the server's data directory (its operator key and the dev gateway's files)")
	fs.StringVar(&c.Server, "server", "https://127.0.0.1:8443", "--api-abuse: URL of the server's API")
	fs.StringVar(&c.MQTTAddr, "mqtt-addr", "127.0.0.1:8883", "--api-abuse: the server's MQTT listener")
	fs.IntVar(&c.PID, "server-pid", 0, "--mqtt, --api-abuse: the server's process id (its CPU time and, with --mqtt, its memory are measured)")
	fs.IntVar(&c.Messages, "messages", 5100, "--api-abuse: messages the dev tenant holds (what is missing is published)")
	fs.IntVar(&c.Rejected, "rejected", 2000, "--api-abuse: rejected messages the dev tenant holds")
	fs.IntVar(&c.AuditEntries, "audit-entries", 10000, "--api-abuse: audit entries the dev tenant holds (what is missing is added)")
	fs.IntVar(&c.Requests, "requests", 10, "--api-abuse: requests measured of each read, each with a key of its own (cheap reads: a second of them)")
	fs.DurationVar(&c.Pause, "read-pause", 5*time.Second, "--api-abuse: pause before each read, for the tenant's read budget to fill up again")
	fs.Float64Var(&c.AbuseRate, "abuse-rate", 50, "--api-abuse: requests per second of the abusing key (the server's per-credential limit is 50)")
	fs.Float64Var(&c.VictimRate, "victim-rate", 20, "--api-abuse: GETs per second of the other tenant")
	return a
}

// run measures and reports.
func (a *abuseFlags) run(ctx context.Context, window time.Duration, output string, stdout, stderr io.Writer) error {
	c := &a.cfg
	var errs []error
	if c.PID <= 0 {
		errs = append(errs, errors.New("--api-abuse needs --server-pid: the server's process id"))
	}
	if c.Requests < 1 {
		errs = append(errs, errors.New("--requests must be at least 1"))
	}
	if c.AbuseRate <= 0 || c.VictimRate <= 0 {
		errs = append(errs, errors.New("--abuse-rate and --victim-rate must be positive"))
	}
	if err := cli.CheckFormat(output); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return usageError("%v", err)
	}
	key, err := os.ReadFile(filepath.Join(a.dataDir, node.OperatorKeyFile))
	if err != nil {
		return err
	}
	c.GatewayDir = filepath.Join(a.dataDir, node.DevTenant, "gateways", node.DevGateway)
	if c.CAPEM, err = os.ReadFile(filepath.Join(c.GatewayDir, "ca.pem")); err != nil {
		return err
	}
	c.OperatorKey = strings.TrimSpace(string(key))
	c.Tenant, c.Gateway, c.Window = node.DevTenant, node.DevGateway, window
	c.Progress = func(format string, args ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", args...) }
	rep, err := loadgen.MeasureAPIAbuse(ctx, *c)
	if err != nil {
		return err
	}
	if output != cli.FormatTable {
		return cli.PrintData(stdout, output, rep)
	}
	return rep.WriteTable(stdout)
}
