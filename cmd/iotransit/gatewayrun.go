package main

import (
	"context"
	"io"

	"github.com/iotransit/iotransit/internal/gateway/agentcmd"
)

// gatewayRunCmd is "iotransit gateway run": the gateway agent (package
// internal/gateway/agentcmd, which cmd/iotransit-gateway runs too).
var gatewayRunCmd = command{name: "run", synopsis: "--data-dir G --server URL --mqtt HOST:PORT --ca FILE --serial S --mesh-addr HOST:PORT [--enroll-token T]",
	summary: "run the gateway agent (mesh receiver, store-and-forward, MQTT uplink)",
	main: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return agentcmd.Run(ctx, "iotransit gateway run", args, stdout, stderr)
	}}
