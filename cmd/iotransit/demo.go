package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/store"
)

func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "keep the demo's data here (default: a temporary directory, removed on exit)")
	mqttAddr := fs.String("mqtt-addr", "127.0.0.1:8883", "gateway listener (a free port is taken if it is busy)")
	apiAddr := fs.String("api-addr", "127.0.0.1:8443", "API listener (a free port is taken if it is busy)")
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
	rcv, err := startDemoReceiver(say)
	if err != nil {
		return err
	}
	defer rcv.close()
	if err := rcv.connect(ctx, n); err != nil {
		return err
	}
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

func simulateGateway(ctx context.Context, n *node.Node, sensors int, interval time.Duration, say func(string, ...any)) error {
	d := n.DevGatewayDir()
	host, _ := node.LocalHostPort(n.MQTTAddr())
	tlsCfg, err := gateway.TLSFiles(filepath.Join(d, "cert.pem"), filepath.Join(d, "key.pem"), filepath.Join(d, "ca.pem"), host)
	if err != nil {
		return err
	}
	up, err := gateway.Dial(ctx, gateway.UplinkConfig{
		Addr: n.MQTTAddr(), Serial: node.DevGateway, TLS: tlsCfg,
		OnReport: func(b []byte) { say("rejected %s", b) },
	})
	if err != nil {
		return err
	}
	defer up.Close()
	sim := newSimulation(uint64(time.Now().UnixNano()), sensors)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-up.Done():
			return fmt.Errorf("simulated gateway: connection closed")
		case <-t.C:
			res, err := up.Publish(ctx, sim.next(time.Now(), true), 1)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				slog.Warn("simulated gateway publish", "error", err)
				continue
			}
			if res.ReasonCode != 0 {
				say("puback   reason 0x%02x: %s", res.ReasonCode, res.Reason)
			}
		}
	}
}
