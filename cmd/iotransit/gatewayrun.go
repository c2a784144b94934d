package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/agent"
	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/gateway/queue"
)

const gatewayRunUsage = `Usage: iotransit gateway run --data-dir G --server https://HOST:PORT --mqtt HOST:PORT --ca FILE --serial S --mesh-addr HOST:PORT [flags]
  Run the gateway agent. The first start needs --enroll-token (or
  --enroll-token-file): the agent makes its key in its key store (files
  0600 in G/keys, or the PKCS#11 token given), sends a CSR to /v1/enroll
  and keeps the certificate; later starts reuse it and renew it through
  /v1/reenroll at two thirds of its life. Sensor frames arrive on UDP
  --mesh-addr (the only socket it listens on), are checked (network,
  authorized node, key epoch, tag, replay window), queued encrypted on disk
  and uploaded in order over MQTT 5 with mutual TLS; the queue keeps them
  while the cloud is away. Logs are JSON lines on standard error.

Flags:
`

// gatewayRunCmd is "iotransit gateway run".
var gatewayRunCmd = command{name: "run", synopsis: "--data-dir G --server URL --mqtt HOST:PORT --ca FILE --serial S --mesh-addr HOST:PORT [--enroll-token T]",
	summary: "run the gateway agent (mesh receiver, store-and-forward, MQTT uplink)", main: gatewayRun}

// gatewayRun is "iotransit gateway run".
func gatewayRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("iotransit gateway run", gatewayRunUsage, stderr)
	var cfg agent.Config
	var caFile, logLevel, full string
	var p11 keystore.PKCS11Config
	qopts := queue.DefaultOptions()
	fs.StringVar(&cfg.DataDir, "data-dir", "", "the agent's data directory (required)")
	fs.StringVar(&cfg.Server, "server", "", "URL of the HTTPS API, https://HOST:PORT (required)")
	fs.StringVar(&cfg.MQTTAddr, "mqtt", "", "the MQTT ingest, HOST:PORT (required)")
	fs.StringVar(&caFile, "ca", "", "PEM file of the CA that verifies the servers (required)")
	fs.StringVar(&cfg.ServerName, "server-name", "", "name in the MQTT server's certificate (default: the host of --mqtt)")
	fs.StringVar(&cfg.Serial, "serial", "", "the gateway serial (required)")
	token := newSecretFlag(fs, "enroll-token", "enrollment token for the first start (prefer --enroll-token-file)", "file holding the enrollment token")
	fs.StringVar(&cfg.MeshAddr, "mesh-addr", "", "UDP address of the mesh receiver, HOST:PORT (required)")
	fs.StringVar(&p11.Module, "pkcs11-module", "", "PKCS#11 library: keep the keys in its token")
	fs.StringVar(&p11.TokenLabel, "pkcs11-token", "", "label of the PKCS#11 token")
	fs.StringVar(&p11.PINFile, "pkcs11-pin-file", "", "file (0600) holding the token's user PIN")
	fs.Int64Var(&qopts.MaxBytes, "queue-max-bytes", qopts.MaxBytes, "bound of the store-and-forward queue, bytes of records")
	fs.StringVar(&full, "queue-full", qopts.Full.String(), "when the queue is full: drop-oldest or refuse-newest")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", time.Minute, "least time between two statuses sent for a change")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if helpAsked(fs, args, stdout) {
		return nil
	}
	pos, onCmdLine, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("gateway run takes no arguments, got %q", pos[0])
	}
	var errs []error
	for _, f := range []struct{ name, v string }{{"data-dir", cfg.DataDir}, {"server", cfg.Server}, {"mqtt", cfg.MQTTAddr}, {"ca", caFile}, {"serial", cfg.Serial}, {"mesh-addr", cfg.MeshAddr}} {
		if f.v == "" {
			errs = append(errs, usageError("gateway run needs --%s", f.name))
		}
	}
	if qopts.Full, err = queue.ParsePolicy(full); err != nil {
		errs = append(errs, usageError("--queue-full: %v", err))
	}
	if p11 != (keystore.PKCS11Config{}) {
		if err := p11.Validate(); err != nil {
			errs = append(errs, usageError("%v", err))
		}
		cfg.PKCS11 = &p11
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if _, err := parseServerURL(cfg.Server); err != nil {
		return err
	}
	if cfg.EnrollToken, err = token.get(onCmdLine); err != nil {
		return err
	}
	if cfg.CAPEM, err = os.ReadFile(caFile); err != nil {
		return fmt.Errorf("--ca: %w", err)
	}
	if cfg.Logger, err = newLogger(stderr, logLevel); err != nil {
		return err
	}
	cfg.Queue = qopts
	cfg.Queue.MaxMessageBytes = min(qopts.MaxMessageBytes, int(qopts.MaxBytes/2))
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	cfg.Logger.Info("gateway agent running", "serial", cfg.Serial, "mesh_addr", a.MeshAddr().String(), "mqtt", cfg.MQTTAddr, "version", agent.Version)
	return a.Run(ctx)
}
