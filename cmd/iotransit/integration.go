package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/cli"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/azure"
	"github.com/iotransit/iotransit/internal/forward/mqttout"
	"github.com/iotransit/iotransit/internal/forward/webhook"
)

// "iotransit integration" manages a tenant's integrations: where its
// messages are forwarded (webhook, MQTT broker, Azure IoT Hub, AWS IoT
// Core, or the WebSocket stream), their delivery state and dead letters.

// errTestFailed is returned by integration test when the endpoint did not
// accept the test delivery.
var errTestFailed = errors.New("the test delivery failed")

// The usage lines and summaries of integration add and update.
var (
	integrationAddSynopsis = fmt.Sprintf("--name N --type %s [type settings] [--filter-tsmid N --filter-device TUID --filter-gateway SERIAL ...] [--batch-max %d] [--batch-wait %s] [--max-age %s] [--public-key F] [--test=false]",
		strings.Join(client.IntegrationTypes, "|"), forward.DefaultMaxMessages, shortDuration(time.Duration(forward.DefaultMaxWait)), shortDuration(time.Duration(forward.DefaultMaxAge)))
	integrationAddSummary     = "create an integration, then deliver a test message to it (-h lists each type's settings); give secrets in files (--secret-file, --password-file, --device-key-file, --client-secret-file, --header-value-file): a secret on the command line may land in the shell history"
	integrationUpdateSynopsis = "[the flags of add to change] [--test=false]"
	integrationUpdateSummary  = "change an integration: only the flags given change (a list flag given replaces that list; secrets not given stay; the type cannot change), then deliver a test message to it"
)

// integrationGroup is "iotransit integration".
var integrationGroup = &group{
	name:    "integration",
	summary: "forward a tenant's messages to webhooks, MQTT brokers, Azure IoT Hub, AWS IoT Core or the WebSocket stream",
	cmds: []command{
		{name: "add", synopsis: integrationAddSynopsis, summary: integrationAddSummary, tenant: true, flags: integrationAddCmd},
		{name: "update", args: []string{"id"}, synopsis: integrationUpdateSynopsis, summary: integrationUpdateSummary, tenant: true, flags: integrationUpdateCmd},
		{name: "list", summary: "list the tenant's integrations with their health (ok, failing, paused, dead-letters), backlog, dead letters, next retry and last error (never their secrets)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				vs, err := e.api.ListIntegrations(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(client.List[client.IntegrationView]{Items: vs}, integrationList(time.Now(), vs))
			}},
		{name: "get", args: []string{"id"}, summary: "show an integration's settings and delivery state: delivered, failed attempts, dead letters, backlog, last error, last success", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				v, err := e.api.GetIntegration(ctx, e.tenant, args[0])
				if err != nil {
					return err
				}
				return e.show(v, func(w io.Writer) error { return printIntegration(w, v) })
			}},
		itemCmd("pause", "id", "stop delivering; messages wait in the backlog (up to --max-age)", (*client.Client).PauseIntegration, integrationTable),
		itemCmd("resume", "id", "deliver again, the backlog first", (*client.Client).ResumeIntegration, integrationTable),
		{name: "retry-now", args: []string{"id"}, summary: "end the backoff wait of a failing integration: the batch it retries is tried again at once (on whichever node delivers it)", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				in, err := e.api.RetryIntegrationNow(ctx, e.tenant, args[0])
				if err != nil {
					return err
				}
				return e.show(in, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "integration %s: a batch waiting to be retried is tried again now; see iotransit integration get %s\n", in.ID, in.ID)
					return err
				})
			}},
		{name: "delete", args: []string{"id"}, summary: "delete an integration, its backlog position and its dead letters", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				if err := e.api.DeleteIntegration(ctx, e.tenant, args[0]); err != nil {
					return err
				}
				e.done("integration %s deleted", args[0])
				return nil
			}},
		{name: "test", args: []string{"id"}, summary: "deliver one synthetic message now; prints ok or failed, the latency and the error, and fails when the endpoint did not accept it", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				r, err := e.api.TestIntegration(ctx, e.tenant, args[0])
				if err != nil {
					return err
				}
				err = e.show(r, func(w io.Writer) error {
					if r.OK {
						_, err := fmt.Fprintf(w, "ok: the test delivery was accepted in %.1f ms (batch %s)\n", r.LatencyMS, r.BatchID)
						return err
					}
					_, err := fmt.Fprintf(w, "failed: the test delivery was not accepted after %.1f ms: %s (batch %s)\n", r.LatencyMS, orDash(r.Error), r.BatchID)
					return err
				})
				if err != nil {
					return err
				}
				if !r.OK {
					return fmt.Errorf("%w: integration %s: %s", errTestFailed, args[0], orDash(r.Error))
				}
				return nil
			}},
		{name: "rotate-secret", args: []string{"id"}, synopsis: "[--overlap " + shortDuration(forward.DefaultSecretOverlap) + "]", summary: "give a webhook a new signing secret (shown once); the previous one keeps signing for --overlap", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				overlap := fs.Duration("overlap", forward.DefaultSecretOverlap, "how long the previous secret keeps signing too, so the receiver can switch (0 to "+shortDuration(forward.MaxSecretOverlap)+")")
				return func(ctx context.Context, e *env, args []string) error {
					if *overlap < 0 {
						return usageError("--overlap must not be negative")
					}
					in, err := e.api.RotateSecret(ctx, e.tenant, args[0], client.RotateSecretRequest{Overlap: overlap.String()})
					if err != nil {
						return err
					}
					if e.json {
						warnSecretInJSON(e)
					}
					return e.show(in, func(w io.Writer) error {
						if err := integrationTable(*in)(w); err != nil {
							return err
						}
						if in.Webhook == nil || in.Webhook.Secret == "" {
							return errors.New("the server's answer holds no new secret")
						}
						printSecret(w, "new webhook signing secret", in.Webhook.Secret)
						if in.PreviousSecretUntil != nil {
							fmt.Fprintf(w, "The previous secret keeps signing too until %s: give the receiver the new one before then.\n", fmtTime(in.PreviousSecretUntil))
						} else {
							fmt.Fprintln(w, "The previous secret no longer signs.")
						}
						return nil
					})
				}
			}},
		{name: "dead-letters", args: []string{"id"}, synopsis: "[--limit N] [--cursor C]", summary: "list the messages the integration gave up on, oldest first", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var q client.DeadLetterQuery
				fs.IntVar(&q.Limit, "limit", 0, "at most this many ("+pageLimits+")")
				fs.StringVar(&q.Cursor, "cursor", "", "the next page, as printed after the previous one")
				return func(ctx context.Context, e *env, args []string) error {
					p, err := e.api.ListDeadLetters(ctx, e.tenant, args[0], q)
					if err != nil {
						return err
					}
					err = e.show(p, rows([]string{"SEQ", "DEAD-AT", "REASON", "ATTEMPTS", "GATEWAY", "MESSAGE-ID"}, p.Items, func(d client.DeadLetter) []string {
						return []string{strconv.FormatUint(d.Seq, 10), fmtTime(&d.DeadAt), d.Reason, strconv.Itoa(d.Attempts), d.Gateway, d.ID}
					}))
					if err != nil {
						return err
					}
					e.nextPage("dead letters", "--cursor", p.Next)
					return nil
				}
			}},
		{name: "redrive", args: []string{"id"}, synopsis: "[--seq N ...]", summary: "send dead letters to the integration again (all of them when no --seq is given) and remove them from the dead letters", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var seqs []string
				fs.Var(listFlag{list: &seqs, repeatable: true}, "seq", "the SEQ of a dead letter to re-drive (repeatable, or comma-separated; default: all)")
				return func(ctx context.Context, e *env, args []string) error {
					nums := make([]uint64, 0, len(seqs))
					for _, s := range seqs {
						n, err := strconv.ParseUint(s, 10, 64)
						if err != nil || n == 0 {
							return usageError("--seq %q: want the SEQ of a dead letter, as dead-letters lists it", s)
						}
						nums = append(nums, n)
					}
					r, err := e.api.Redrive(ctx, e.tenant, args[0], nums...)
					if err != nil {
						return err
					}
					return e.show(r, func(w io.Writer) error {
						_, err := fmt.Fprintf(w, "re-drove %d dead letter(s) of integration %s\n", r.Redriven, args[0])
						return err
					})
				}
			}},
	},
}

// integrationAddFlags are the flags of "integration add" and "integration
// update".
type integrationAddFlags struct {
	name, typ                                              string
	url, auth, headerName, tokenURL, tokenCAFile           string
	secret, headerValue, clientSecret, password, deviceKey *secretFlag
	scopes                                                 []string
	targetCAFile, clientCert, clientKey, clientID, topic   string
	broker, username                                       string
	hubHost, deviceID, endpoint                            string
	port                                                   int
	filterTsmIDs, filterDevices, filterGateways            []string
	batchMax, concurrency                                  int
	batchWait, maxAge                                      time.Duration
	publicKey                                              string
	test                                                   bool
}

// define defines the flags of integration add and update, by type.
func (f *integrationAddFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "a name for the integration, unique in the tenant (required)")
	fs.StringVar(&f.typ, "type", "", orList(client.IntegrationTypes)+" (required)")

	fs.StringVar(&f.url, "url", "", "webhook: the https URL messages are POSTed to (required)")
	f.secret = newSecretFlag(fs, "secret", "webhook: the signing secret whsec_… (default: generated and shown once; prefer --secret-file)", "webhook: file holding the signing secret")
	fs.StringVar(&f.auth, "auth", "", "webhook: outbound authentication: none, apikey, oauth2 or mtls (default none)")
	fs.StringVar(&f.headerName, "header-name", "", "webhook --auth apikey: the header carrying the key (server default "+webhook.DefaultAPIKeyHeader+")")
	f.headerValue = newSecretFlag(fs, "header-value", "webhook --auth apikey: the key (prefer --header-value-file)", "webhook --auth apikey: file holding the key")
	fs.StringVar(&f.tokenURL, "token-url", "", "webhook --auth oauth2: the https token endpoint (client credentials grant)")
	fs.StringVar(&f.tokenCAFile, "token-ca-file", "", "webhook --auth oauth2: PEM file of the CA that verifies --token-url (default: the system's roots and --target-ca-file)")
	f.clientSecret = newSecretFlag(fs, "client-secret", "webhook --auth oauth2: the client secret (prefer --client-secret-file)", "webhook --auth oauth2: file holding the client secret")
	fs.Var(listFlag{list: &f.scopes, repeatable: true}, "scope", "webhook --auth oauth2: a scope to request (repeatable, or comma-separated)")

	fs.IntVar(&f.concurrency, "concurrency", 0, fmt.Sprintf("webhook: deliver up to this many batches at once, 1 to %d (server default %d); each device's messages keep their order", forward.MaxConcurrency, forward.DefaultConcurrency))

	fs.StringVar(&f.targetCAFile, "target-ca-file", "", "webhook, mqtt, azure-iothub, aws-iot: PEM file of the CA that verifies the target's certificate (default: the system's roots; not the API's --ca)")
	cli.Renamed(fs, "ca-file", "target-ca-file", " (the CA that verifies the integration's target); --ca is the CA that verifies the iotransit API")
	fs.StringVar(&f.clientCert, "client-cert", "", "webhook --auth mtls, mqtt: PEM client certificate file for mutual TLS; aws-iot: the thing's certificate (required)")
	fs.StringVar(&f.clientKey, "client-key", "", "webhook, mqtt, aws-iot: PEM private key file of --client-cert")
	fs.StringVar(&f.clientID, "client-id", "", "webhook --auth oauth2: the OAuth2 client id; mqtt: the MQTT client id (default generated); aws-iot: the MQTT client id (required)")
	fs.StringVar(&f.topic, "topic", "", "mqtt: the topic template (server default: Thingsee's data stream layout); aws-iot: the topic (required)")

	fs.StringVar(&f.broker, "broker", "", fmt.Sprintf("mqtt: the broker, mqtts://host[:%d] (required; plaintext mqtt:// is refused)", mqttout.DefaultPort))
	fs.StringVar(&f.username, "username", "", "mqtt: the user name")
	f.password = newSecretFlag(fs, "password", "mqtt: the password (prefer --password-file)", "mqtt: file holding the password")

	fs.StringVar(&f.hubHost, "hub-host", "", "azure-iothub: the hub's host name, e.g. myhub.azure-devices.net (required)")
	fs.StringVar(&f.deviceID, "device-id", "", "azure-iothub: the device id (required)")
	f.deviceKey = newSecretFlag(fs, "device-key", "azure-iothub: the device's symmetric key, base64 (prefer --device-key-file)", "azure-iothub: file holding the device key")
	fs.StringVar(&f.endpoint, "endpoint", "", "aws-iot: the account's data endpoint, xxxx-ats.iot.REGION.amazonaws.com (required)")
	fs.IntVar(&f.port, "port", 0, fmt.Sprintf("azure-iothub, aws-iot: the MQTT port (default %d)", azure.DefaultPort))

	fs.Var(listFlag{list: &f.filterTsmIDs, repeatable: true}, "filter-tsmid", "forward only this tsmId, e.g. 12100 (repeatable; default: every message)")
	fs.Var(listFlag{list: &f.filterDevices, repeatable: true}, "filter-device", "forward only this sensor, by tsmTuid (repeatable)")
	fs.Var(listFlag{list: &f.filterGateways, repeatable: true}, "filter-gateway", "forward only messages of this gateway serial (repeatable)")
	fs.IntVar(&f.batchMax, "batch-max", 0, fmt.Sprintf("at most this many messages per delivery, 1 to %d (server default %d)", forward.MaxMaxMessages, forward.DefaultMaxMessages))
	fs.DurationVar(&f.batchWait, "batch-wait", 0, fmt.Sprintf("how long a batch's first message waits for more, %s to %s (server default %s)",
		shortDuration(time.Duration(forward.MinMaxWait)), shortDuration(time.Duration(forward.MaxMaxWait)), shortDuration(time.Duration(forward.DefaultMaxWait))))
	fs.DurationVar(&f.maxAge, "max-age", 0, fmt.Sprintf("a message still undelivered after this long goes to the dead letters, %s to %s (server default %s)",
		shortDuration(time.Duration(forward.MinMaxAge)), shortDuration(time.Duration(forward.MaxMaxAge)), shortDuration(time.Duration(forward.DefaultMaxAge))))
	fs.StringVar(&f.publicKey, "public-key", "", "PEM file of an X25519 public key (iotransit keygen) to seal every payload to (update: '' stops sealing)")
	fs.BoolVar(&f.test, "test", true, "after saving, deliver one test message and explain a failure (--test=false skips it); the integration stays saved either way")
}

// integrationFlagGroups are the sections of the help of integration add
// and update: the flags of each target type (a flag of several types is in
// each of them), then those of every type.
var integrationFlagGroups = []struct{ title, typ string }{
	{"Webhook (--type webhook)", client.IntegrationWebhook},
	{"MQTT broker (--type mqtt)", client.IntegrationMQTT},
	{"Azure IoT Hub (--type azure-iothub)", client.IntegrationAzure},
	{"AWS IoT Core (--type aws-iot)", client.IntegrationAWS},
	{"Every type (websocket has only these)", ""},
}

// integrationCommonFlags are the flags of every type, in help order.
var integrationCommonFlags = []string{"name", "type", "filter-tsmid", "filter-device", "filter-gateway", "batch-max", "batch-wait", "max-age", "public-key", "test"}

// integrationUsage returns the usage of integration add or update (line,
// summary), in the style of every command's (cli.PrintFlags): its flags
// grouped per target type (integrationFlagGroups), each described as it
// applies to that type, then the connection flags. The renamed --ca-file
// is not listed.
func integrationUsage(fs *flag.FlagSet, line, summary string) func() {
	return func() {
		w := fs.Output()
		if r, ok := w.(cli.HelpRecorder); ok {
			r.RecordFlags(fs)
		}
		fmt.Fprintf(w, "Usage: %s\n  %s\n", line, summary)
		for _, g := range integrationFlagGroups {
			fmt.Fprintf(w, "\n%s:\n", g.title)
			section := flag.NewFlagSet(g.title, flag.ContinueOnError)
			fs.VisitAll(func(fl *flag.Flag) {
				switch {
				case g.typ == "" && slices.Contains(integrationCommonFlags, fl.Name):
					section.Var(fl.Value, fl.Name, fl.Usage)
				case g.typ != "" && slices.Contains(integrationFlagTypes[fl.Name], g.typ):
					section.Var(fl.Value, fl.Name, usageFor(fl.Usage, g.typ))
				default:
					return
				}
				section.Lookup(fl.Name).DefValue = fl.DefValue
			})
			cli.PrintFlags(w, section)
		}
		fmt.Fprint(w, "\nConnection flags (also from the environment, else the login profile):\n")
		cli.PrintFlagsOf(w, fs, func(fl *flag.Flag) bool { return connFlag(fl.Name) })
	}
}

// usageFor returns what a flag's description says of type typ. A
// description is of parts "TYPES: text" joined by "; ", where TYPES lists
// types, each with an optional qualifier ("webhook --auth oauth2: the
// client id; mqtt: the client id"); the qualifier is kept. A description
// of another form is returned as it is.
func usageFor(usage, typ string) string {
	type part struct{ types, text string }
	var parts []part
	for _, seg := range strings.Split(usage, "; ") {
		types, text, ok := strings.Cut(seg, ": ")
		if ok {
			for _, item := range strings.Split(types, ", ") {
				name, _, _ := strings.Cut(item, " ")
				ok = ok && slices.Contains(client.IntegrationTypes, name)
			}
		}
		if !ok { // a part of the text before
			if len(parts) == 0 {
				return usage
			}
			parts[len(parts)-1].text += "; " + seg
			continue
		}
		parts = append(parts, part{types, text})
	}
	for _, p := range parts {
		for _, item := range strings.Split(p.types, ", ") {
			if name, qualifier, _ := strings.Cut(item, " "); name == typ {
				if qualifier != "" {
					return qualifier + ": " + p.text
				}
				return p.text
			}
		}
	}
	return usage
}

// orList writes "a, b or c".
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// integrationFlagTypes says which types each type-specific flag applies to.
var integrationFlagTypes = func() map[string][]string {
	const (
		hook = client.IntegrationWebhook
		mqtt = client.IntegrationMQTT
		az   = client.IntegrationAzure
		aws  = client.IntegrationAWS
	)
	return map[string][]string{
		"url": {hook}, "concurrency": {hook}, "secret": {hook}, "secret-file": {hook}, "auth": {hook},
		"header-name": {hook}, "header-value": {hook}, "header-value-file": {hook},
		"token-url": {hook}, "token-ca-file": {hook}, "client-secret": {hook}, "client-secret-file": {hook}, "scope": {hook},
		"target-ca-file": {hook, mqtt, az, aws},
		"client-cert":    {hook, mqtt, aws}, "client-key": {hook, mqtt, aws},
		"client-id": {hook, mqtt, aws}, "topic": {mqtt, aws},
		"broker": {mqtt}, "username": {mqtt}, "password": {mqtt}, "password-file": {mqtt},
		"hub-host": {az}, "device-id": {az}, "device-key": {az}, "device-key-file": {az},
		"endpoint": {aws}, "port": {az, aws},
	}
}()

// webhookAuthFlags says which --auth kind each webhook auth flag needs.
var webhookAuthFlags = map[string]string{
	"header-name": "apikey", "header-value": "apikey", "header-value-file": "apikey",
	"token-url": "oauth2", "token-ca-file": "oauth2", "client-id": "oauth2", "client-secret": "oauth2", "client-secret-file": "oauth2", "scope": "oauth2",
}

// authSecrets names the secret of each webhook auth kind that has one, as
// clearSecrets names it.
var authSecrets = map[string]string{"apikey": "auth.headerValue", "oauth2": "auth.clientSecret"}

// checkFlags refuses the flags given that do not apply to an integration of
// type typ whose webhook authentication is auth.
func checkFlags(given map[string]bool, typ, auth string) error {
	names := slices.Sorted(maps.Keys(given))
	for _, n := range names {
		types, ok := integrationFlagTypes[n]
		if ok && !slices.Contains(types, typ) {
			return usageError("--%s (or %s) does not apply to --type %s; it is for %s", n, envVar(n), typ, strings.Join(types, ", "))
		}
	}
	if typ != client.IntegrationWebhook {
		return nil
	}
	switch auth {
	case "", "none", "apikey", "oauth2", "mtls":
	default:
		return usageError("--auth %q: want none, apikey, oauth2 or mtls", auth)
	}
	for _, n := range names {
		if kind, ok := webhookAuthFlags[n]; ok && auth != kind {
			return usageError("--%s needs --auth %s", n, kind)
		}
	}
	return nil
}

// request checks the flags and builds the integration to create; given
// names the flags set (on the command line or from the environment),
// onCmdLine those on the command line.
func (f *integrationAddFlags) request(given, onCmdLine map[string]bool) (*client.Integration, error) {
	typ := strings.TrimSpace(f.typ)
	if typ == "" {
		return nil, usageError("integration add needs --type: %s", strings.Join(client.IntegrationTypes, ", "))
	}
	if !slices.Contains(client.IntegrationTypes, typ) {
		return nil, usageError("--type %q: want one of %s", f.typ, strings.Join(client.IntegrationTypes, ", "))
	}
	if strings.TrimSpace(f.name) == "" {
		return nil, usageError("integration add needs --name")
	}
	if err := checkFlags(given, typ, f.auth); err != nil {
		return nil, err
	}
	if typ == client.IntegrationWebhook && f.auth == "mtls" && (f.clientCert == "" || f.clientKey == "") {
		return nil, usageError("--auth mtls needs --client-cert and --client-key")
	}
	in := &client.Integration{Type: typ}
	if err := f.apply(in, given, onCmdLine); err != nil {
		return nil, err
	}
	need := func(flagName, v string) error {
		if strings.TrimSpace(v) == "" {
			return usageError("--type %s needs --%s", typ, flagName)
		}
		return nil
	}
	switch typ {
	case client.IntegrationWebhook:
		if err := need("url", f.url); err != nil {
			return nil, err
		}
		switch a := in.Webhook.Auth; {
		case a == nil:
		case a.Kind == "apikey" && a.HeaderValue == "":
			return nil, usageError("--auth apikey needs --header-value-file or --header-value")
		case a.Kind == "oauth2" && (a.ClientSecret == "" || a.TokenURL == "" || a.ClientID == ""):
			return nil, usageError("--auth oauth2 needs --token-url, --client-id and --client-secret-file (or --client-secret)")
		}
	case client.IntegrationMQTT:
		if err := need("broker", f.broker); err != nil {
			return nil, err
		}
	case client.IntegrationAzure:
		if err := need("hub-host", f.hubHost); err != nil {
			return nil, err
		}
		if err := need("device-id", f.deviceID); err != nil {
			return nil, err
		}
		if in.Azure.DeviceKey == "" {
			return nil, usageError("--type %s needs --device-key-file or --device-key", typ)
		}
	case client.IntegrationAWS:
		for _, n := range [][2]string{{"endpoint", f.endpoint}, {"client-id", f.clientID}, {"topic", f.topic}, {"client-cert", f.clientCert}} {
			if err := need(n[0], n[1]); err != nil {
				return nil, err
			}
		}
	}
	return in, nil
}

// patch checks the flags of integration update against the integration
// cur and builds the change: the members the flags given set, a type
// settings object whole (the server merges it over the stored one; secrets
// not given stay).
func (f *integrationAddFlags) patch(cur *client.Integration, given, onCmdLine map[string]bool) (client.IntegrationPatch, error) {
	var p client.IntegrationPatch
	if given["type"] && strings.TrimSpace(f.typ) != cur.Type {
		return p, usageError("--type %s: the type of an integration cannot change (%s is %s); add a new integration instead", f.typ, cur.ID, cur.Type)
	}
	auth := ""
	if cur.Webhook != nil && cur.Webhook.Auth != nil {
		auth = cur.Webhook.Auth.Kind
	}
	if given["auth"] && f.auth != auth {
		// The server merges the new auth over the old: the secret of the
		// old kind would stay stored (and come back with it).
		if s := authSecrets[auth]; s != "" {
			p.ClearSecrets = []string{s}
		}
		auth = f.auth
	}
	if err := checkFlags(given, cur.Type, auth); err != nil {
		return p, err
	}
	// An empty value would be left out of the body, and the server keeps
	// what is left out: refuse it rather than change nothing.
	values := map[string]string{"name": f.name, "url": f.url, "auth": f.auth, "header-name": f.headerName, "token-url": f.tokenURL,
		"token-ca-file": f.tokenCAFile, "target-ca-file": f.targetCAFile, "client-cert": f.clientCert, "client-key": f.clientKey,
		"client-id": f.clientID, "topic": f.topic, "broker": f.broker, "username": f.username, "hub-host": f.hubHost,
		"device-id": f.deviceID, "endpoint": f.endpoint, "port": strconv.Itoa(f.port)}
	for _, n := range slices.Sorted(maps.Keys(values)) {
		if v := strings.TrimSpace(values[n]); given[n] && (v == "" || n == "port" && v == "0") {
			return p, usageError("--%s %q: integration update cannot clear it; give a new value", n, values[n])
		}
	}
	changes := 0
	for n := range given {
		if n != "type" && n != "test" && !connFlag(n) {
			changes++
		}
	}
	if changes == 0 {
		return p, usageError("integration update: nothing to change; give the flags to change, as for integration add (see -h)")
	}
	in := *cur
	if err := f.apply(&in, given, onCmdLine); err != nil {
		return p, err
	}
	if given["name"] {
		p.Name = &in.Name
	}
	if given["filter-tsmid"] || given["filter-device"] || given["filter-gateway"] {
		p.Filter = &in.Filter
	}
	if given["batch-max"] || given["batch-wait"] {
		p.Batch = &in.Batch
	}
	if given["max-age"] {
		p.MaxAge = &in.MaxAge
	}
	if given["concurrency"] {
		p.Delivery = &in.Delivery
	}
	p.Encryption = in.Encryption
	if !given["public-key"] {
		p.Encryption = nil
	} else if f.publicKey == "" {
		p.Encryption, p.RemoveEncryption = nil, true
	}
	typed := false
	for n := range given {
		if _, ok := integrationFlagTypes[n]; ok && n != "concurrency" { // not in the type's settings object
			typed = true
		}
	}
	if typed {
		p.Webhook, p.MQTT, p.Azure, p.AWS = in.Webhook, in.MQTT, in.Azure, in.AWS
	}
	return p, nil
}

// connFlag reports whether a flag is one of the connection's, not of the
// integration.
func connFlag(name string) bool {
	_, typed := integrationFlagTypes[name]
	return !typed && !slices.Contains(integrationCommonFlags, name) && name != "ca-file"
}

// apply sets in's members from the flags given (the others stay): common
// members, then the settings object of in's type (made if missing).
func (f *integrationAddFlags) apply(in *client.Integration, given, onCmdLine map[string]bool) error {
	if given["name"] {
		in.Name = strings.TrimSpace(f.name)
	}
	if f.batchMax < 0 || f.batchWait < 0 || f.maxAge < 0 || f.port < 0 || f.concurrency < 0 {
		return usageError("--batch-max, --batch-wait, --max-age, --port and --concurrency must not be negative")
	}
	if (f.clientCert == "") != (f.clientKey == "") {
		return usageError("give --client-cert and --client-key together")
	}
	if given["batch-max"] {
		in.Batch.MaxMessages = f.batchMax
	}
	if given["batch-wait"] {
		in.Batch.MaxWait = client.Duration(f.batchWait)
	}
	if given["max-age"] {
		in.MaxAge = client.Duration(f.maxAge)
	}
	if given["concurrency"] {
		in.Delivery.Concurrency = f.concurrency
	}
	if given["filter-tsmid"] {
		in.Filter.TsmIDs = nil
		for _, s := range f.filterTsmIDs {
			n, err := strconv.Atoi(s)
			if err != nil {
				return usageError("--filter-tsmid %q: want a number such as 12100", s)
			}
			in.Filter.TsmIDs = append(in.Filter.TsmIDs, n)
		}
	}
	if given["filter-device"] {
		in.Filter.Devices = f.filterDevices
	}
	if given["filter-gateway"] {
		in.Filter.Gateways = f.filterGateways
	}
	// PEM material, read once.
	pem := map[string]string{}
	for n, path := range map[string]string{"public-key": f.publicKey, "target-ca-file": f.targetCAFile, "client-cert": f.clientCert, "client-key": f.clientKey, "token-ca-file": f.tokenCAFile} {
		if path == "" {
			continue
		}
		v, err := readFlagFile(n, path)
		if err != nil {
			return err
		}
		pem[n] = v
	}
	if given["public-key"] {
		in.Encryption = &client.Encryption{PublicKeyPEM: pem["public-key"]}
	}
	set := func(dst *string, name, v string) {
		if given[name] {
			*dst = v
		}
	}
	setPEM := func(dst *string, name string) {
		if given[name] {
			*dst = pem[name]
		}
	}
	setSecret := func(dst *string, s *secretFlag) error {
		v, err := s.Get(onCmdLine)
		if v != "" {
			*dst = v
		}
		return err
	}
	switch in.Type {
	case client.IntegrationWebhook:
		if in.Webhook == nil {
			in.Webhook = &client.WebhookConfig{}
		}
		w := in.Webhook
		set(&w.URL, "url", strings.TrimSpace(f.url))
		setPEM(&w.CAPEM, "target-ca-file")
		setPEM(&w.ClientCertPEM, "client-cert")
		setPEM(&w.ClientKeyPEM, "client-key")
		if err := setSecret(&w.Secret, f.secret); err != nil {
			return err
		}
		if given["auth"] && (w.Auth == nil || w.Auth.Kind != f.auth) {
			w.Auth = &client.WebhookAuth{Kind: f.auth}
		}
		if a := w.Auth; a != nil {
			set(&a.HeaderName, "header-name", f.headerName)
			set(&a.TokenURL, "token-url", f.tokenURL)
			set(&a.ClientID, "client-id", f.clientID)
			setPEM(&a.TokenCAPEM, "token-ca-file")
			if given["scope"] {
				a.Scopes = f.scopes
			}
			if err := setSecret(&a.HeaderValue, f.headerValue); err != nil {
				return err
			}
			if err := setSecret(&a.ClientSecret, f.clientSecret); err != nil {
				return err
			}
		}
	case client.IntegrationMQTT:
		if in.MQTT == nil {
			in.MQTT = &client.MQTTConfig{}
		}
		m := in.MQTT
		set(&m.Broker, "broker", strings.TrimSpace(f.broker))
		set(&m.ClientID, "client-id", f.clientID)
		set(&m.Username, "username", f.username)
		set(&m.Topic, "topic", f.topic)
		setPEM(&m.CAPEM, "target-ca-file")
		setPEM(&m.ClientCertPEM, "client-cert")
		setPEM(&m.ClientKeyPEM, "client-key")
		if err := setSecret(&m.Password, f.password); err != nil {
			return err
		}
	case client.IntegrationAzure:
		if in.Azure == nil {
			in.Azure = &client.AzureConfig{}
		}
		a := in.Azure
		set(&a.HostName, "hub-host", strings.TrimSpace(f.hubHost))
		set(&a.DeviceID, "device-id", f.deviceID)
		setPEM(&a.CAPEM, "target-ca-file")
		if given["port"] {
			a.Port = f.port
		}
		if err := setSecret(&a.DeviceKey, f.deviceKey); err != nil {
			return err
		}
	case client.IntegrationAWS:
		if in.AWS == nil {
			in.AWS = &client.AWSConfig{}
		}
		a := in.AWS
		set(&a.Endpoint, "endpoint", strings.TrimSpace(f.endpoint))
		set(&a.ClientID, "client-id", f.clientID)
		set(&a.Topic, "topic", f.topic)
		setPEM(&a.CAPEM, "target-ca-file")
		setPEM(&a.CertPEM, "client-cert")
		setPEM(&a.KeyPEM, "client-key")
		if given["port"] {
			a.Port = f.port
		}
	}
	return nil
}

// integrationAddCmd defines the flags of integration add and returns its
// action.
func integrationAddCmd(fs *flag.FlagSet) action {
	f := &integrationAddFlags{}
	f.define(fs)
	fs.Usage = integrationUsage(fs, "iotransit integration add "+integrationAddSynopsis, integrationAddSummary)
	return func(ctx context.Context, e *env, _ []string) error {
		req, err := f.request(givenFlags(fs), e.onCmdLine)
		if err != nil {
			return err
		}
		in, err := e.api.CreateIntegration(ctx, e.tenant, *req)
		if err != nil {
			return err
		}
		secret := ""
		if in.Webhook != nil {
			secret = in.Webhook.Secret
		}
		if e.json && secret != "" {
			warnSecretInJSON(e)
		}
		err = e.show(in, func(w io.Writer) error {
			if err := integrationTable(*in)(w); err != nil {
				return err
			}
			if secret != "" {
				printSecret(w, "webhook signing secret", secret)
				fmt.Fprintln(w, "The receiver verifies each request's webhook-signature header with it (Standard Webhooks).")
			}
			return nil
		})
		if err != nil {
			return err
		}
		return f.testSaved(ctx, e, in)
	}
}

// integrationUpdateCmd defines the flags of integration update (those of
// add) and returns its action.
func integrationUpdateCmd(fs *flag.FlagSet) action {
	f := &integrationAddFlags{}
	f.define(fs)
	fs.Usage = integrationUsage(fs, "iotransit integration update <id> "+integrationUpdateSynopsis, integrationUpdateSummary)
	return func(ctx context.Context, e *env, args []string) error {
		cur, err := e.api.GetIntegration(ctx, e.tenant, args[0])
		if err != nil {
			return err
		}
		p, err := f.patch(&cur.Integration, givenFlags(fs), e.onCmdLine)
		if err != nil {
			return err
		}
		in, err := e.api.UpdateIntegration(ctx, e.tenant, args[0], p)
		if err != nil {
			return err
		}
		if err := e.show(in, integrationTable(*in)); err != nil {
			return err
		}
		return f.testSaved(ctx, e, in)
	}
}

// givenFlags names the flags set, on the command line or from the
// environment.
func givenFlags(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	return given
}

// testSaved runs the test delivery of an integration just saved (unless
// --test=false, and but for websocket, which has no endpoint). A failure is
// explained on stderr, with the flag that fixes a TLS trust failure, and
// is the command's error (exit status 2): the integration stays saved.
func (f *integrationAddFlags) testSaved(ctx context.Context, e *env, in *client.Integration) error {
	if !f.test || in.Type == client.IntegrationWebsocket {
		return nil
	}
	r, err := e.api.TestIntegration(ctx, e.tenant, in.ID)
	if err != nil {
		return fmt.Errorf("integration %s is saved, but its test delivery could not run: %w", in.ID, err)
	}
	if r.OK {
		fmt.Fprintf(e.stderr, "test delivery: ok, accepted in %.1f ms\n", r.LatencyMS)
		return nil
	}
	fmt.Fprintf(e.stderr, "test delivery: failed after %.1f ms: %s\n", r.LatencyMS, orDash(r.Error))
	fmt.Fprintln(e.stderr, testAdvice(in, r.Code))
	return fmt.Errorf("%w: integration %s is saved but its endpoint did not accept the test delivery (%s); fix it with iotransit integration update %s, check with iotransit integration test %s",
		errTestFailed, in.ID, orDash(r.Error), in.ID, in.ID)
}

// targetFlag is the flag naming where an integration of type typ delivers.
func targetFlag(typ string) string {
	switch typ {
	case client.IntegrationMQTT:
		return "--broker"
	case client.IntegrationAzure:
		return "--hub-host"
	case client.IntegrationAWS:
		return "--endpoint"
	}
	return "--url"
}

// testAdvice says what to do about a failed test delivery of kind code
// (client.TestResult.Code).
func testAdvice(in *client.Integration, code string) string {
	id := in.ID
	switch code {
	case client.TestTLSUnknownAuthority:
		return fmt.Sprintf("The target's certificate is not signed by a CA the integration trusts (its --target-ca-file, else the system's roots).\n"+
			"Give the CA that signed it: iotransit integration update %s --target-ca-file CA.pem\n"+
			"(--ca is the CA of the iotransit API, not of the target.)", id)
	case client.TestTLSNameMismatch:
		return fmt.Sprintf("The target's certificate is not for the host in %s %s.\n"+
			"Use the host name the certificate names: iotransit integration update %s %s …", targetFlag(in.Type), integrationTarget(in), id, targetFlag(in.Type))
	case client.TestTLSExpired:
		return fmt.Sprintf("The target's certificate is expired or not yet valid: renew it on the target, then run iotransit integration test %s\n"+
			"(or deliver elsewhere: iotransit integration update %s %s …)", id, id, targetFlag(in.Type))
	}
	return fmt.Sprintf("Fix the target or the settings (iotransit integration update %s …), then run iotransit integration test %s", id, id)
}

// warnSecretInJSON tells on stderr that the JSON answer holds a secret that
// is not shown again.
func warnSecretInJSON(e *env) {
	fmt.Fprintln(e.stderr, "note: the answer holds the webhook signing secret (webhook.secret), shown only once; store it now, it cannot be shown again")
}

// readFlagFile reads the file a flag names (PEM material).
func readFlagFile(name, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", name, err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return "", fmt.Errorf("--%s %s is empty", name, path)
	}
	return string(b), nil
}

// integrationTarget is where an integration delivers, in a few words.
func integrationTarget(in *client.Integration) string {
	switch {
	case in.Webhook != nil:
		return in.Webhook.URL
	case in.MQTT != nil:
		return in.MQTT.Broker
	case in.Azure != nil:
		return in.Azure.HostName + "/" + in.Azure.DeviceID
	case in.AWS != nil:
		return in.AWS.Endpoint
	}
	return ""
}

// integrationTable writes integrations, one a row.
func integrationTable(ins ...client.Integration) func(w io.Writer) error {
	return rows([]string{"ID", "NAME", "TYPE", "PAUSED", "TARGET"}, ins, func(in client.Integration) []string {
		return []string{in.ID, in.Name, in.Type, yesNo(in.Paused), integrationTarget(&in)}
	})
}

// integrationList writes integrations with their delivery state, one a
// row: the last error last, with when it was resolved.
func integrationList(now time.Time, vs []client.IntegrationView) func(w io.Writer) error {
	return rows([]string{"ID", "NAME", "TYPE", "HEALTH", "BACKLOG", "DEAD-LETTERS", "NEXT-RETRY", "TARGET", "LAST-ERROR"}, vs, func(v client.IntegrationView) []string {
		s := v.State
		next := ""
		if s.NextRetryAt != nil && v.Health == client.HealthFailing {
			next = shortTime(now, *s.NextRetryAt)
		}
		return []string{v.ID, v.Name, v.Type, v.Health, strconv.FormatUint(v.Backlog, 10), strconv.FormatUint(v.DeadLetters, 10), next, integrationTarget(&v.Integration), lastError(now, s)}
	})
}

// lastError writes an integration's last error, "HTTP 503 (resolved
// 14:02)" once a delivery succeeded after it.
func lastError(now time.Time, s client.IntegrationState) string {
	if s.LastError == "" {
		return ""
	}
	if s.LastErrorResolvedAt != nil {
		return s.LastError + " (resolved " + shortTime(now, *s.LastErrorResolvedAt) + ")"
	}
	if s.LastErrorAt != nil {
		return s.LastError + " (since " + shortTime(now, *s.LastErrorAt) + ")"
	}
	return s.LastError
}

// shortTime writes t in UTC as 15:04:05 when it is within a day of now,
// else in full.
func shortTime(now, t time.Time) string {
	if d := now.Sub(t); d < 24*time.Hour && d > -24*time.Hour {
		return t.UTC().Format("15:04:05")
	}
	return fmtTime(&t)
}

// fmtFilter writes what a filter selects.
func fmtFilter(f client.Filter) string {
	var parts []string
	if len(f.TsmIDs) > 0 {
		ids := make([]string, len(f.TsmIDs))
		for i, id := range f.TsmIDs {
			ids[i] = strconv.Itoa(id)
		}
		parts = append(parts, "tsmIds="+strings.Join(ids, ","))
	}
	if len(f.Devices) > 0 {
		parts = append(parts, "devices="+strings.Join(f.Devices, ","))
	}
	if len(f.Gateways) > 0 {
		parts = append(parts, "gateways="+strings.Join(f.Gateways, ","))
	}
	if len(parts) == 0 {
		return "every message"
	}
	return strings.Join(parts, " ")
}

// pinned says which CA verifies an endpoint.
func pinned(caPEM string) string {
	if caPEM != "" {
		return "pinned CA"
	}
	return "system roots"
}

// printIntegration writes an integration's settings and delivery state.
func printIntegration(w io.Writer, v *client.IntegrationView) error {
	in := &v.Integration
	t := newTable(w, "ID:", in.ID)
	t.row("NAME:", in.Name)
	t.row("TYPE:", in.Type)
	t.row("TENANT:", in.Tenant)
	t.row("PAUSED:", yesNo(in.Paused))
	t.row("TARGET:", integrationTarget(in))
	switch {
	case in.Webhook != nil:
		w := in.Webhook
		auth := "none"
		if a := w.Auth; a != nil && a.Kind != "" {
			auth = a.Kind
			switch a.Kind {
			case "apikey":
				auth += " (header " + orDefault(a.HeaderName, webhook.DefaultAPIKeyHeader) + ")"
			case "oauth2":
				auth += " (client " + a.ClientID + ", token URL " + a.TokenURL
				if len(a.Scopes) > 0 {
					auth += ", scopes " + strings.Join(a.Scopes, " ")
				}
				auth += ")"
			}
		}
		t.row("AUTH:", auth)
		t.row("SERVER-CA:", pinned(w.CAPEM))
		t.row("CLIENT-CERT:", yesNo(w.ClientCertPEM != ""))
	case in.MQTT != nil:
		m := in.MQTT
		t.row("TOPIC:", orDefault(m.Topic, "(default)"))
		t.row("CLIENT-ID:", orDefault(m.ClientID, "(generated)"))
		t.row("USERNAME:", m.Username)
		t.row("SERVER-CA:", pinned(m.CAPEM))
		t.row("CLIENT-CERT:", yesNo(m.ClientCertPEM != ""))
	case in.Azure != nil:
		t.row("HUB:", in.Azure.HostName)
		t.row("DEVICE-ID:", in.Azure.DeviceID)
		if in.Azure.Port != 0 {
			t.row("PORT:", strconv.Itoa(in.Azure.Port))
		}
		t.row("SERVER-CA:", pinned(in.Azure.CAPEM))
	case in.AWS != nil:
		t.row("ENDPOINT:", in.AWS.Endpoint)
		if in.AWS.Port != 0 {
			t.row("PORT:", strconv.Itoa(in.AWS.Port))
		}
		t.row("CLIENT-ID:", in.AWS.ClientID)
		t.row("TOPIC:", in.AWS.Topic)
		t.row("SERVER-CA:", pinned(in.AWS.CAPEM))
	}
	t.row("FILTER:", fmtFilter(in.Filter))
	t.row("BATCH:", fmt.Sprintf("up to %d messages, waiting up to %s", in.Batch.MaxMessages, time.Duration(in.Batch.MaxWait)))
	if in.Type == client.IntegrationWebhook && in.Delivery.Concurrency > 0 {
		t.row("DELIVERY:", fmt.Sprintf("up to %d batches at once, each device's in order", in.Delivery.Concurrency))
	}
	t.row("MAX-AGE:", time.Duration(in.MaxAge).String())
	enc := "none"
	if in.Encryption != nil {
		enc = "sealed to key " + in.Encryption.KeyID
	}
	t.row("ENCRYPTION:", enc)
	t.row("SECRETS-SET:", strings.Join(in.SecretsSet, ","))
	if in.PreviousSecretUntil != nil {
		t.row("PREVIOUS-SECRET:", "signs until "+fmtTime(in.PreviousSecretUntil))
	}
	t.row("CREATED:", fmtTime(&in.CreatedAt))
	t.row("UPDATED:", fmtTime(&in.UpdatedAt))
	if err := t.flush(); err != nil {
		return err
	}

	s := v.State
	fmt.Fprintln(w)
	t = newTable(w, "DELIVERED:", strconv.FormatUint(s.Delivered, 10))
	t.row("BATCHES:", strconv.FormatUint(s.Batches, 10))
	t.row("FAILED-ATTEMPTS:", strconv.FormatUint(s.Failed, 10))
	t.row("CONSECUTIVE-FAILURES:", strconv.Itoa(s.ConsecutiveFailures))
	t.row("DEAD-LETTERS:", strconv.FormatUint(v.DeadLetters, 10))
	t.row("DEAD-LETTERED:", strconv.FormatUint(s.DeadLettered, 10))
	t.row("BACKLOG:", strconv.FormatUint(v.Backlog, 10))
	lastErr := orDash(s.LastError)
	if s.LastError != "" && s.LastErrorAt != nil {
		lastErr += " at " + fmtTime(s.LastErrorAt)
	}
	if s.LastError != "" && s.LastErrorResolvedAt != nil {
		lastErr += " (resolved " + fmtTime(s.LastErrorResolvedAt) + ")"
	}
	t.row("HEALTH:", v.Health)
	t.row("LAST-ERROR:", lastErr)
	t.row("LAST-SUCCESS:", fmtTime(s.LastSuccessAt))
	if s.NextRetryAt != nil && s.ConsecutiveFailures > 0 {
		t.row("NEXT-RETRY:", fmtTime(s.NextRetryAt))
	}
	return t.flush()
}

// orDefault writes s, or def when it is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
