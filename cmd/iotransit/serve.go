package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/iotransit/iotransit/internal/node"
)

// serveFlags are the flags of serve (and, in part, demo and bench).
type serveFlags struct {
	cfg      node.Config
	logLevel string
	check    bool
}

// newServeFlags defines the flags; each flag's default is the one the
// configured package owns (node.DefaultConfig and the parts' DefaultConfig).
func newServeFlags(fs *flag.FlagSet) *serveFlags {
	f := &serveFlags{cfg: node.DefaultConfig()}
	c := &f.cfg
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the embedded JetStream store and the key files (required)")
	fs.StringVar(&c.MQTTAddr, "mqtt-addr", c.MQTTAddr, "gateway listener: MQTT over TLS with client certificates")
	fs.StringVar(&c.APIAddr, "api-addr", c.APIAddr, "HTTPS API listener")
	// Operators (issue 12): the admin listener and the bootstrap key's recovery.
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "`HOST:PORT` of a separate HTTPS listener (same certificate) for the operator routes: /metrics, /v1/tenants create and list, /v1/factory, /v1/operators; they then answer 404 on --api-addr (default: none, all on --api-addr)")
	fs.StringVar(&c.AdminClientCAFile, "admin-client-ca", c.AdminClientCAFile, "PEM `FILE` of the CA(s) issuing operators' client certificates: the admin listener then requires one, operator keys work only there, and a named operator's only with a certificate whose common name is its name (needs --admin-addr)")
	fs.BoolVar(&c.ResetBootstrapOperator, "reset-bootstrap-operator", c.ResetBootstrapOperator, "make the data directory's "+node.OperatorKeyFile+" work again after it was retired (recovery when no operator:admin is left; audited)")
	fs.BoolVar(&c.Dev, "dev", c.Dev, "development mode: create tenant "+node.DevTenant+", gateway "+node.DevGateway+" and its certificate files, certificates for localhost")
	fs.Var(listFlag{list: &c.ServerNames}, "server-name", "comma-separated DNS names and IPs of the server certificate (dev: localhost,127.0.0.1)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", c.TLSCertFile, "server certificate chain PEM (instead of the internal server CA)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", c.TLSKeyFile, "server private key PEM")
	fs.Var(listFlag{list: &c.NATSURLs}, "nats-url", "comma-separated URLs of an external NATS JetStream cluster (default: embedded)")
	fs.StringVar(&c.NATSCreds, "nats-creds", c.NATSCreds, "credentials file for --nats-url")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "replicas of every stream and bucket (3 in a cluster)")
	fs.StringVar(&c.Fsync, "fsync", c.Fsync, "durability: default (acked once written to the OS; survives kill -9; JetStream fsyncs every 2m) or always (fsync before every ack; survives power loss)")
	fs.DurationVar(&c.CertValidity, "cert-validity", c.CertValidity, "lifetime of issued gateway certificates")
	fs.IntVar(&c.Ingest.MaxPayload, "max-payload", c.Ingest.MaxPayload, "largest MQTT publish payload in bytes")
	fs.Float64Var(&c.Ingest.MsgRate, "msg-rate", c.Ingest.MsgRate, "Thingsee messages per second allowed per gateway")
	fs.IntVar(&c.Ingest.MsgBurst, "msg-burst", c.Ingest.MsgBurst, "burst of messages allowed above --msg-rate")
	fs.DurationVar(&c.Ingest.ConnectTimeout, "connect-timeout", c.Ingest.ConnectTimeout, "deadline for the TLS handshake plus the MQTT CONNECT")
	fs.IntVar(&c.Ingest.MaxConnsPerTenant, "max-conns-per-tenant", c.Ingest.MaxConnsPerTenant, "concurrent gateway connections per tenant")
	fs.Float64Var(&c.Ingest.HandshakeRate, "handshake-rate", c.Ingest.HandshakeRate, "gateway TLS handshakes started per second at most, 1 to 1000000 (a reconnect storm waits, within --connect-timeout, instead of taking every core)")
	fs.IntVar(&c.Ingest.HandshakeConcurrency, "handshake-parallel", c.Ingest.HandshakeConcurrency, "gateway TLS handshakes computing at once at most, 1 to 1024 (0: half the CPUs, at least 1)")
	fs.DurationVar(&c.Ingest.MaxFutureSkew, "max-future-skew", c.Ingest.MaxFutureSkew, "how far ahead of the server clock a tsmTs may be")
	fs.IntVar(&c.Ingest.ReceiveMaximum, "receive-maximum", c.Ingest.ReceiveMaximum, "QoS 1 publishes one gateway connection may have in flight before their PUBACKs (MQTT Receive Maximum, announced in CONNACK), 1 to 65535")
	fs.IntVar(&c.Ingest.MaxInFlight, "ingest-max-inflight", c.Ingest.MaxInFlight, "messages being written to the store across all gateway connections at most (a publish past it waits), 1 to 32768")
	fs.DurationVar(&c.Store.Retention, "retention", c.Store.Retention, "how long messages are kept")
	fs.DurationVar(&c.Store.DedupeWindow, "dedupe-window", c.Store.DedupeWindow, "how long a message's content id is remembered to store resends once; each id held costs ~130 bytes of memory (rate × window)")
	fs.Int64Var(&c.Store.MaxBytes, "max-tenant-bytes", c.Store.MaxBytes, "bytes of messages kept per tenant; oldest go first (0: unlimited)")
	fs.BoolVar(&c.AllowPrivateTargets, "allow-private-targets", c.AllowPrivateTargets, "let integrations reach loopback, private and link-local addresses (on with --dev)")
	kmsFlags(fs, &c.KMS) // the root key (kms.go)
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.check, "check-config", false, "check the configuration, report every problem, and exit")
	return f
}

// serveUsage heads serve's help, before the flags.
const serveUsage = `Usage: iotransit serve --data-dir DIR [flags]
  Run an iotransit node: the MQTT ingest (mutual TLS), the HTTPS API and
  forwarding, on an embedded JetStream (or --nats-url). Every flag can be set
  from the environment variable named after it in brackets ([$IOTRANSIT_…]);
  a flag on the command line wins.

  The root key wraps every tenant's data keys. By default it is the file
  <data-dir>/root.key (0600, made at the first start); --root-key-file puts
  it elsewhere (outside the data dir: a backup of the data dir alone opens
  nothing), and --kms-provider pkcs11 generates it in a PKCS#11 token
  instead, where wrapping runs. A node refuses to start with a root key that
  does not open its data (naming both root key ids), and never makes a new
  one while keys wrapped under another exist. To move to another root key,
  add the --previous-* flags naming the old one: the node re-wraps every
  key at its start (see iotransit kms rewrap -h).

  Unless GOGC or GOMEMLIMIT is set in the environment, serve runs Go's
  garbage collector at GOGC=200 (Go's default is 100): about half as many
  collections, for a larger heap.

  Operators: the data directory's operator.key (the bootstrap key) can do
  everything. Named operator keys (iotransit operator create) hold one role:
  operator:admin (everything), operator:provisioning (tenants, factory,
  registering gateways and their enrollment tokens), operator:readonly
  (reads, never customer messages, the stream or dead letters) or
  operator:metrics (GET /metrics). Once an admin exists, "iotransit operator
  retire-bootstrap" retires the bootstrap key on every node; a node started
  with --reset-bootstrap-operator brings it back. --admin-addr moves the
  operator routes and /metrics to a listener of their own (a management
  network).

Flags:
`

// serve is "iotransit serve": flags to node.Config, then the node runs
// until ctx ends.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveUsage, stderr)
	f := newServeFlags(fs)
	// Every flag can come from the environment: say which variable.
	fs.VisitAll(func(fl *flag.Flag) { fl.Usage += " [$" + envVar(fl.Name) + "]" })
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	f.cfg.Logger = log
	if f.check {
		if err := f.cfg.Check(); err != nil {
			return fmt.Errorf("configuration:\n%w", err)
		}
		fmt.Fprintln(stdout, "configuration ok")
		return nil
	}
	if pct, ok := tuneGC(os.Getenv); ok {
		log.Debug("garbage collector tuned", "gogc", pct)
	}
	n, err := node.Start(ctx, f.cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	if f.cfg.Dev {
		printDevBanner(stdout, n, f.cfg.DataDir)
	}
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// serveGCPercent is serve's garbage-collector target (GOGC) when the
// environment sets none: the ingest allocates per message, and at the
// default of 100 collection took 9-15% of the server's CPU (issue 11).
const serveGCPercent = 200

// tuneGC sets the garbage-collector target to serveGCPercent unless getenv
// gives GOGC or GOMEMLIMIT (the operator's choice wins: the runtime has
// read them already). It returns the percent set and whether it set one.
func tuneGC(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return 0, false
	}
	debug.SetGCPercent(serveGCPercent)
	return serveGCPercent, true
}

// printDevBanner tells how to reach a dev node: its listeners, its operator
// key and the dev gateway's files, with commands to try.
func printDevBanner(w io.Writer, n *node.Node, dataDir string) {
	ca := filepath.Join(n.DevGatewayDir(), "ca.pem")
	host, port := node.LocalHostPort(n.APIAddr())
	fmt.Fprintf(w, `iotransit is running in dev mode.
  gateway MQTT (mTLS): %s
  API (HTTPS):         https://%s:%s  (operator key: %s)
  gateway files:       %s/{ca.pem,cert.pem,key.pem}

Publish a message as gateway %s:
  %s

Read it back:
  curl --cacert %s -H "Authorization: Bearer $(cat %s)" 'https://%s:%s/v1/tenants/%s/messages?limit=5'
`, n.MQTTAddr(), host, port, filepath.Join(dataDir, node.OperatorKeyFile), n.DevGatewayDir(),
		node.DevGateway, n.DevPublishCommand(), ca, filepath.Join(dataDir, node.OperatorKeyFile), host, port, node.DevTenant)
}
