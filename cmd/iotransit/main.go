// Command iotransit is the secure IoT transit cloud: one binary that runs
// the server (serve), a self-contained demo (demo), and the load generator
// (bench). Admin subcommands that call the API join in later issues.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `iotransit: a secure transit point for IoT sensor data.

Usage:
  iotransit serve [flags]   run the server (see: iotransit serve -h)
  iotransit demo  [flags]   run everything embedded, with a simulated gateway
  iotransit bench [flags]   measure ingest throughput and latency

Administration, through the HTTPS API (local or remote):
  iotransit tenant  create|list|get                 tenants (operator key)
  iotransit gateway register|list|get|isolate|activate|revoke|delete
  iotransit token   create <serial> [--ttl 24h]     one-time enrollment token
  iotransit apikey  create|list|get|revoke          a tenant's API keys
  iotransit audit   list|verify                     the tenant's audit log
  iotransit integration add|list|get|pause|resume|delete|test|rotate-secret|dead-letters|redrive
                                                    forward messages: webhook, MQTT, Azure, AWS, WebSocket
  iotransit enroll  --token T --serial S --out DIR  enroll a gateway: key made here
  They take --server (IOTRANSIT_SERVER), --ca (IOTRANSIT_CA), --key-file
  (IOTRANSIT_KEY_FILE) or --key (IOTRANSIT_KEY), --tenant (IOTRANSIT_TENANT),
  -o table|json; see iotransit <command> -h.

Payload encryption, on the customer's side (no server needed):
  iotransit keygen  --out DIR                       key pair an integration seals to
  iotransit decrypt --key K [--in F] [--out F]      open a payload sealed to the key

Every flag but decrypt's can also be set with an environment variable: --data-dir is
IOTRANSIT_DATA_DIR, --mqtt-addr is IOTRANSIT_MQTT_ADDR, and so on.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "iotransit:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "demo":
		return demo(ctx, args[1:], stdout, stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "tenant":
		return runAdmin(ctx, tenantGroup, args[1:], stdout, stderr)
	case "gateway":
		return runAdmin(ctx, gatewayGroup, args[1:], stdout, stderr)
	case "token":
		return runAdmin(ctx, tokenGroup, args[1:], stdout, stderr)
	case "apikey":
		return runAdmin(ctx, apikeyGroup, args[1:], stdout, stderr)
	case "audit":
		return runAdmin(ctx, auditGroup, args[1:], stdout, stderr)
	case "integration":
		return runAdmin(ctx, integrationGroup, args[1:], stdout, stderr)
	case "enroll":
		return adminEnroll(ctx, args[1:], stdout, stderr)
	case "keygen":
		return keygen(ctx, args[1:], stdout, stderr)
	case "decrypt":
		return decrypt(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// parseFlags parses args, then fills every flag not given on the command
// line from its IOTRANSIT_* environment variable.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "IOTRANSIT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
