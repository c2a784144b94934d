// Command iotransit is the secure IoT transit cloud: one binary that runs
// the server (serve), a self-contained demo (demo), the load generator
// (bench), the administration commands that call the HTTPS API through the
// public client package (tenant, gateway, token, apikey, audit, policy,
// integration, messages, rejected, enroll), the command line's own
// (login, logout, completion), and the customer's side of payload
// encryption (keygen, decrypt). Each command parses its flags, builds a config and
// calls the package that owns the work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

const usage = `iotransit: a secure transit point for IoT sensor data.

Usage:
  iotransit serve [flags]   run the server (see: iotransit serve -h)
  iotransit demo  [flags]   run everything embedded, with a simulated gateway
  iotransit bench [flags]   measure ingest throughput and latency
  iotransit mesh-sim [flags]  simulated sensor nodes sending over the secured mesh to a gateway
  iotransit --version       the version of this binary

Administration, through the HTTPS API (local or remote):
  iotransit tenant  create|list|get|delete          tenants (operator key)
  iotransit gateway register|claim|list|get|label|watch|isolate|activate|revoke|delete|run
  iotransit factory provision --count N --model M --out DIR   gateways with claim codes (operator);
                    a tenant claims one: iotransit gateway claim --serial S --code-file F
  iotransit operator create|list|show|rotate|revoke|retire-bootstrap
                                                    named operator keys with roles (operator:admin)
  iotransit token   create|list|revoke              one-time enrollment tokens for gateways
  iotransit apikey  create|list|get|revoke          a tenant's API keys
  iotransit oauth2-client create|list|get|revoke    a tenant's OAuth2 clients (client credentials)
  iotransit kms     rotate|status|reencrypt|rewrap  a tenant's data keys, re-encryption; a new root key
  iotransit ca      rotate|retire|status            the tenant's CA versions and their overlap
  iotransit keys    list|rotate-jwt|rotate-audit    the platform's token and audit signing keys (operator)
  iotransit audit   list|verify                     the tenant's audit log (operator: --tenant _system)
  iotransit policy  show|set [--file F]             the tenant's security policy (set: operator key)
  iotransit integration add|update|list|get|pause|resume|retry-now|delete|test|rotate-secret|dead-letters|redrive
                                                    forward messages: webhook, MQTT, Azure, AWS, WebSocket
  iotransit messages list|tail [--gateway S] [--tuid T] [--tsm-id N] [--limit N] [--follow]
                                                    stored messages; tail --follow streams new ones
  iotransit messages erase --tuid T                 erase one sensor's stored data (GDPR Art. 17)
  iotransit rejected list|tail [--gateway S] [--code C] [--limit N] [--follow]
                                                    messages the node refused, with the reason
  iotransit enroll  --token T --serial S --out DIR  enroll a gateway: key made here
  iotransit mesh key create|rotate|list|export      the sensor mesh's network keys
  iotransit mesh node add|list|remove               the mesh's authorized sensor nodes
  iotransit firmware init|publish|resign|rotate-root|list  signed firmware on TUF (keys stay here)
  iotransit firmware rollout create|get             roll firmware out to gateways, in waves
  They take --server (IOTRANSIT_SERVER), --ca (IOTRANSIT_CA), --key-file
  (IOTRANSIT_KEY_FILE) or --key (IOTRANSIT_KEY), --tenant (IOTRANSIT_TENANT),
  --profile (IOTRANSIT_PROFILE), -o table|json|yaml; see iotransit <command> -h.

The command line itself:
  iotransit login --server URL [--ca FILE] --key-file FILE [--tenant ID] [--profile NAME]
                                                    keep them as a profile the commands use
  iotransit login list|use                          the profiles; choose the current one
  iotransit logout [NAME]                           remove a profile
  iotransit completion bash|zsh|fish                shell completion script

Payload encryption, on the customer's side (no server needed):
  iotransit keygen  --out DIR                       key pair an integration seals to
  iotransit decrypt --key K [--in F] [--out F]      open a payload sealed to the key

Every flag but decrypt's can also be set with an environment variable: --data-dir is
IOTRANSIT_DATA_DIR, --mqtt-addr is IOTRANSIT_MQTT_ADDR, and so on. A flag given on the
command line beats its variable. A secret comes from --NAME or from a file, --NAME-file
(safer: a secret on the command line may land in the shell history), as --key or
--key-file, --token or --token-file: give one of the two, and set only one of their
variables (IOTRANSIT_KEY or IOTRANSIT_KEY_FILE).
`

// commands are the commands of the top level, by name.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"serve":       serve,
	"demo":        demo,
	"bench":       bench,
	"login":       login,
	"logout":      logout,
	"tenant":      tenantGroup.run,
	"gateway":     gatewayGroup.run,
	"factory":     factoryGroup.run,
	"token":       tokenGroup.run,
	"apikey":      apikeyGroup.run,
	"audit":       auditGroup.run,
	"integration": integrationGroup.run,
	"messages":    messagesGroup.run,
	"rejected":    rejectedGroup.run,
	"enroll":      enroll,
	"keygen":      keygen,
	"decrypt":     decrypt,
	"mesh-sim":    meshSim,
	"mesh":        meshAdmin,
	"firmware":    firmwareCmd,
	"kms":         kmsGroup.run,

	"oauth2-client": oauth2ClientGroup.run,

	"operator": operatorGroup.run,

	"policy": policyGroup.run,

	"ca":   caGroup.run,
	"keys": keysGroup.run,
}

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
	if wantsHelp(args) {
		fmt.Fprint(stdout, usage)
		return nil
	}
	if wantsVersion(args) {
		fmt.Fprintln(stdout, "iotransit", versionString())
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return unknownCommand("", args[0], slices.Sorted(maps.Keys(commands)), usage, stderr)
	}
	if helpRequested(args[1:]) {
		return help(ctx, cmd, args[1:], stdout)
	}
	return cmd(ctx, args[1:], stdout, stderr)
}
