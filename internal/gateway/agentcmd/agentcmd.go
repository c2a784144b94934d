// Package agentcmd is the gateway agent's command line, shared by
// "iotransit gateway run" and the gateway's own small binary,
// cmd/iotransit-gateway (which holds none of the cloud's code): it parses
// the flags, makes the agent and, with --firmware-model, its firmware
// updater, which verifies the active slot before the agent runs.
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/cli"
	"github.com/iotransit/iotransit/internal/gateway/agent"
	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/gateway/queue"
	"github.com/iotransit/iotransit/internal/gateway/updater"
)

const usage = `Usage: %s --data-dir G --server https://HOST:PORT --mqtt HOST:PORT --ca FILE --serial S --mesh-addr HOST:PORT [flags]
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

// Run runs the gateway agent with the command line args; name is the
// command's name in its usage ("iotransit gateway run", or the gateway's
// own binary, "iotransit-gateway"). It returns when ctx ends or the agent
// stops; an error wrapping cli.ErrUsage means the command line was wrong.
func Run(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet(name, fmt.Sprintf(usage, name), stderr)
	var cfg agent.Config
	var caFile, logLevel, full, model, rootFile string
	var p11 keystore.PKCS11Config
	qopts := queue.DefaultOptions()
	fs.StringVar(&cfg.DataDir, "data-dir", "", "the agent's data directory (required)")
	fs.StringVar(&cfg.Server, "server", "", "URL of the HTTPS API, https://HOST:PORT (required)")
	fs.StringVar(&cfg.MQTTAddr, "mqtt", "", "the MQTT ingest, HOST:PORT (required)")
	fs.StringVar(&caFile, "ca", "", "PEM file of the CA that verifies the servers (required)")
	fs.StringVar(&cfg.ServerName, "server-name", "", "name in the MQTT server's certificate (default: the host of --mqtt)")
	fs.StringVar(&cfg.Serial, "serial", "", "the gateway serial (required)")
	token := cli.NewSecretFlag(fs, "enroll-token", "enrollment token for the first start (prefer --enroll-token-file)", "file holding the enrollment token")
	fs.StringVar(&cfg.MeshAddr, "mesh-addr", "", "UDP address of the mesh receiver, HOST:PORT (required)")
	fs.StringVar(&p11.Module, "pkcs11-module", "", "PKCS#11 library: keep the keys in its token")
	fs.StringVar(&p11.TokenLabel, "pkcs11-token", "", "label of the PKCS#11 token")
	fs.StringVar(&p11.PINFile, "pkcs11-pin-file", "", "file (0600) holding the token's user PIN")
	fs.Int64Var(&qopts.MaxBytes, "queue-max-bytes", qopts.MaxBytes, "bound of the store-and-forward queue, bytes of records")
	fs.StringVar(&full, "queue-full", qopts.Full.String(), "when the queue is full: drop-oldest or refuse-newest")
	fs.StringVar(&model, "firmware-model", "", "the gateway's model: turns on signed firmware updates (TUF) for it")
	fs.StringVar(&rootFile, "firmware-root", "", "the tenant's TUF root.json given at commissioning (pinned on first use)")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", time.Minute, "least time between two statuses sent for a change")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if cli.HelpAsked(fs, args, stdout) {
		return nil
	}
	pos, onCmdLine, err := cli.ParseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.UsageError("%s takes no arguments, got %q", name, pos[0])
	}
	var errs []error
	for _, f := range []struct{ name, v string }{{"data-dir", cfg.DataDir}, {"server", cfg.Server}, {"mqtt", cfg.MQTTAddr}, {"ca", caFile}, {"serial", cfg.Serial}, {"mesh-addr", cfg.MeshAddr}} {
		if f.v == "" {
			errs = append(errs, cli.UsageError("%s needs --%s", name, f.name))
		}
	}
	if qopts.Full, err = queue.ParsePolicy(full); err != nil {
		errs = append(errs, cli.UsageError("--queue-full: %v", err))
	}
	if p11 != (keystore.PKCS11Config{}) {
		if err := p11.Validate(); err != nil {
			errs = append(errs, cli.UsageError("%v", err))
		}
		cfg.PKCS11 = &p11
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if _, err := client.ParseServerURL(cfg.Server); err != nil {
		return errors.New("--" + err.Error()) // "server ...": name the flag
	}
	if cfg.EnrollToken, err = token.Get(onCmdLine); err != nil {
		return err
	}
	if cfg.CAPEM, err = os.ReadFile(caFile); err != nil {
		return fmt.Errorf("--ca: %w", err)
	}
	if cfg.Logger, err = cli.NewLogger(stderr, logLevel); err != nil {
		return err
	}
	cfg.Queue = qopts
	cfg.Queue.MaxMessageBytes = min(qopts.MaxMessageBytes, int(qopts.MaxBytes/2))
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	if model != "" {
		up, err := firmwareUpdater(ctx, a, cfg, model, rootFile)
		if err != nil {
			return err
		}
		a.SetFirmwareHandler(up)
	}
	cfg.Logger.Info("gateway agent running", "serial", cfg.Serial, "mesh_addr", a.MeshAddr().String(), "mqtt", cfg.MQTTAddr, "version", agent.Version)
	return a.Run(ctx)
}

// firmwareUpdater makes the agent's firmware updater (internal/gateway/updater)
// in DATA-DIR/firmware and boots it: the active slot is verified against
// the trusted TUF metadata, a slot on trial is confirmed or rolled back,
// and the agent refuses to run when no slot verifies.
func firmwareUpdater(ctx context.Context, a *agent.Agent, cfg agent.Config, model, rootFile string) (*updater.Updater, error) {
	var root []byte
	if rootFile != "" {
		var err error
		if root, err = os.ReadFile(rootFile); err != nil {
			return nil, fmt.Errorf("--firmware-root: %w", err)
		}
	}
	api, err := a.APIClient()
	if err != nil {
		return nil, err
	}
	up, err := updater.New(updater.Config{Dir: filepath.Join(cfg.DataDir, "firmware"), Client: api, Model: model, TrustedRoot: root, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	slot, err := up.Boot(ctx)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("firmware slot verified", "slot", slot.Name, "version", slot.Version)
	return up, nil
}
