package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/gateway/agent"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/securefile"
	"github.com/iotransit/iotransit/internal/store"
)

// demo is "iotransit demo": a dev node, the gateway agent enrolled with a
// real token, simulated sensor nodes sending sealed frames over the mesh
// (now and then a replayed one, which the agent drops), and a webhook
// receiver, all in this process, each message shown as it is stored and
// delivered.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "", stderr)
	d := node.DefaultConfig()
	dataDir := fs.String("data-dir", "", "keep the demo's data here (default: a temporary directory, removed on exit)")
	mqttAddr := fs.String("mqtt-addr", loopback(d.MQTTAddr), "gateway listener (a free port is taken if it is busy)")
	apiAddr := fs.String("api-addr", loopback(d.APIAddr), "API listener (a free port is taken if it is busy)")
	sensors := fs.Int("sensors", 6, "simulated sensor nodes on the gateway's mesh")
	interval := fs.Duration("interval", time.Second, "time between two frames of one sensor node")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	logLevel := fs.String("log-level", "warn", "server log level (debug, info, warn, error)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *sensors < 1 || *interval <= 0 {
		return fmt.Errorf("--sensors must be at least 1 and --interval positive")
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "iotransit-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	cfg := node.Config{DataDir: dir, MQTTAddr: *mqttAddr, APIAddr: *apiAddr, Dev: true, Logger: log}
	n, err := node.Start(ctx, cfg)
	if err != nil && (strings.Contains(err.Error(), "address already in use")) {
		fmt.Fprintln(stdout, "(default ports busy: using free ones)")
		cfg.MQTTAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
		n, err = node.Start(ctx, cfg)
	}
	if err != nil {
		return err
	}
	defer n.Close()
	printDevBanner(stdout, n, dir)
	fmt.Fprintf(stdout, "\nThe gateway agent (%s) now enrolls, gets the mesh keys, and receives sealed frames from %d simulated sensor nodes, one from each every %s. Stored messages appear below, the frames the agent drops, and the batches a local HTTPS receiver gets through a webhook integration (Ctrl-C to stop).\n\n", demoAgentSerial, *sensors, *interval)

	var mu sync.Mutex // one line at a time
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, format+"\n", a...)
	}
	rcv, err := startDemoReceiver(ctx, n, say)
	if err != nil {
		return err
	}
	defer rcv.close()
	go func() {
		err := n.Follow(ctx, node.DevTenant, func(m store.Message) {
			say("stored   %s  %s  %s", m.ReceivedAt.Local().Format("15:04:05.000"), m.ID[:12], m.Message)
		})
		if err != nil {
			say("follow: %v", err)
		}
	}()
	return runDemoDevices(ctx, n, dir, *sensors, *interval, log, say)
}

// loopback returns the listener address addr (":8883") on 127.0.0.1.
func loopback(addr string) string { return net.JoinHostPort("127.0.0.1", listenerPort(addr)) }

// demoAgentSerial is the gateway the demo's agent runs as: not the dev
// gateway, whose files the printed mosquitto_pub command uses, so that
// command never takes over the agent's session.
const demoAgentSerial = "TSGW06DEV00000002"

// demoRound is how long one mesh-sim run lasts in the demo; each round is a
// new boot of the simulated nodes and carries one replayed frame.
var demoRound = 20 * time.Second

// runDemoDevices runs the device tier of the demo until ctx ends: it
// registers the agent's gateway in a Thingsee deployment group and makes
// its enrollment token, creates the dev tenant's mesh network (its key and
// the authorized nodes) and exports its key file, all through the API as an
// operator would, then starts the gateway agent and simulated sensor nodes
// that send to the agent's mesh receiver.
func runDemoDevices(ctx context.Context, n *node.Node, dir string, sensors int, interval time.Duration, log *slog.Logger, say func(string, ...any)) error {
	host, port := node.LocalHostPort(n.APIAddr())
	server := "https://" + net.JoinHostPort(host, port)
	c, err := client.New(client.Config{Server: server, CAPEM: n.ServerCAPEM(), Credential: n.OperatorKey()})
	if err != nil {
		return err
	}
	agentDir := filepath.Join(dir, "demo-agent")
	token, err := demoGateway(ctx, n, c, agentDir)
	if err != nil {
		return err
	}
	keyFile, err := demoMesh(ctx, c, filepath.Join(dir, "demo-mesh"), sensors)
	if err != nil {
		return err
	}
	mqttHost, mqttPort := node.LocalHostPort(n.MQTTAddr())
	a, err := agent.New(ctx, agent.Config{
		DataDir: agentDir, Server: server, MQTTAddr: net.JoinHostPort(mqttHost, mqttPort), CAPEM: n.ServerCAPEM(),
		Serial: demoAgentSerial, EnrollToken: token, MeshAddr: "127.0.0.1:0", Logger: log,
		StatusInterval: 5 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("gateway agent: %w", err)
	}
	defer a.Close()
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(ctx) }()
	say("agent    gateway %s enrolled; mesh receiver on udp %s", demoAgentSerial, a.MeshAddr())
	// Frames sent before the agent holds the keys and the node list would
	// be dropped: wait for the cloud's delivery on down/keys and down/nodes.
	for keys, nodes := a.Receiver().Versions(); keys == 0 || nodes == 0; keys, nodes = a.Receiver().Versions() {
		select {
		case <-ctx.Done():
			return nil
		case err := <-agentDone:
			return fmt.Errorf("gateway agent: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	say("agent    holds the mesh keys and the list of %d authorized nodes (sealed to it by the cloud)", sensors)
	go reportDrops(ctx, a, say)
	cfg := meshSimConfig{
		gateway: a.MeshAddr().String(), keyFile: keyFile, nodes: sensors, firstNode: 1,
		rate: float64(sensors) / interval.Seconds(), duration: demoRound, replay: 1,
	}
	quiet := func(string, ...any) {}
	for ctx.Err() == nil {
		if _, err := runMeshSim(ctx, cfg, quiet); err != nil {
			return fmt.Errorf("mesh-sim: %w", err)
		}
	}
	return nil
}

// demoGateway registers the agent's gateway (once) and returns an
// enrollment token when the agent has no certificate yet in agentDir.
func demoGateway(ctx context.Context, n *node.Node, c *client.Client, agentDir string) (string, error) {
	if _, err := c.GetGateway(ctx, node.DevTenant, demoAgentSerial); err != nil {
		if _, err := c.RegisterGateway(ctx, node.DevTenant, client.RegisterGatewayRequest{Serial: demoAgentSerial}); err != nil {
			return "", err
		}
	}
	// The gateway sits in a Thingsee deployment group, which the cloud
	// adds to its messages.
	if _, err := n.Registry().SetDeploymentGroup(ctx, node.DevTenant, demoAgentSerial, "dmfi00demo"); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(agentDir, "cert.pem")); err == nil {
		return "", nil
	}
	t, err := c.CreateEnrollmentToken(ctx, node.DevTenant, client.CreateEnrollmentTokenRequest{Serial: demoAgentSerial, TTL: "10m"})
	if err != nil {
		return "", err
	}
	return t.Token, nil
}

// demoMesh creates the dev tenant's mesh network (once), authorizes nodes
// 1..sensors and writes the network's key file (0600) into dir.
func demoMesh(ctx context.Context, c *client.Client, dir string, sensors int) (string, error) {
	if _, err := c.MeshKeys(ctx, node.DevTenant); err != nil {
		if _, err := c.RotateMeshKey(ctx, node.DevTenant, client.MeshKeyRequest{}); err != nil {
			return "", err
		}
	}
	ids := make([]uint32, sensors)
	for i := range ids {
		ids[i] = uint32(i + 1)
	}
	for chunk := range slices.Chunk(ids, 1000) {
		if _, err := c.AddMeshNodes(ctx, node.DevTenant, chunk); err != nil {
			return "", err
		}
	}
	keys, err := c.ExportMeshKeys(ctx, node.DevTenant)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	file := filepath.Join(dir, "network.key")
	return file, securefile.WriteAtomic(file, keys, 0o600)
}

// reportDrops says, every second, which frames the agent dropped since the
// last time, by reason.
func reportDrops(ctx context.Context, a *agent.Agent, say func(string, ...any)) {
	seen := map[string]uint64{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := a.Receiver().Stats()
		for _, reason := range slices.Sorted(maps.Keys(st.Dropped)) {
			if d := st.Dropped[reason] - seen[reason]; d > 0 {
				say("agent    dropped %d frame(s): %s (%d so far; %d accepted)", d, reason, st.Dropped[reason], st.Accepted)
				seen[reason] = st.Dropped[reason]
			}
		}
	}
}
