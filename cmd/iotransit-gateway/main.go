// Command iotransit-gateway is the gateway agent on its own: the same agent
// as "iotransit gateway run" (package internal/gateway/agentcmd) in a binary
// that holds none of the cloud's code, small enough for a gateway's
// firmware image. It receives the sealed frames of the sensor mesh on UDP,
// keeps them in an encrypted store-and-forward queue, and uploads them over
// MQTT 5 with mutual TLS; run it with --help for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/iotransit/iotransit/internal/gateway/agentcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agentcmd.Run(ctx, "iotransit-gateway", os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "iotransit-gateway:", err)
		}
		os.Exit(2)
	}
}
