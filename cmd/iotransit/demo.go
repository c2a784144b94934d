package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/store"
)

// demo is "iotransit demo": a dev node, a simulated gateway and a webhook
// receiver in this process, each message shown as it is stored and
// delivered.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "", stderr)
	d := node.DefaultConfig()
	dataDir := fs.String("data-dir", "", "keep the demo's data here (default: a temporary directory, removed on exit)")
	mqttAddr := fs.String("mqtt-addr", loopback(d.MQTTAddr), "gateway listener (a free port is taken if it is busy)")
	apiAddr := fs.String("api-addr", loopback(d.APIAddr), "API listener (a free port is taken if it is busy)")
	sensors := fs.Int("sensors", 6, "simulated sensors behind the gateway")
	interval := fs.Duration("interval", time.Second, "time between the simulated gateway's uploads")
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
	fmt.Fprintf(stdout, "\nA simulated gateway now uploads data of %d sensors every %s. Stored messages appear below, and the batches a local HTTPS receiver gets through a webhook integration (Ctrl-C to stop).\n\n", *sensors, *interval)

	var mu sync.Mutex // one line at a time
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, format+"\n", a...)
	}
	// The demo gateway sits in a Thingsee deployment group, which the cloud
	// adds to its messages.
	if _, err := n.Registry().SetDeploymentGroup(ctx, node.DevTenant, node.DevGateway, "dmfi00demo"); err != nil {
		return err
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
	return simulateGateway(ctx, n, *sensors, *interval, say)
}

// loopback returns the listener address addr (":8883") on 127.0.0.1.
func loopback(addr string) string { return net.JoinHostPort("127.0.0.1", listenerPort(addr)) }
