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

// integrationGroup is "iotransit integration".
var integrationGroup = &group{
	name:    "integration",
	summary: "forward a tenant's messages to webhooks, MQTT brokers, Azure IoT Hub, AWS IoT Core or the WebSocket stream",
	cmds: []command{
		{name: "add", synopsis: fmt.Sprintf("--name N --type %s [type settings] [--filter-tsmid N --filter-device TUID --filter-gateway SERIAL ...] [--batch-max %d] [--batch-wait %s] [--max-age %s] [--public-key F]",
			strings.Join(client.IntegrationTypes, "|"), forward.DefaultMaxMessages, shortDuration(time.Duration(forward.DefaultMaxWait)), shortDuration(time.Duration(forward.DefaultMaxAge))),
			summary: "create an integration (-h lists each type's settings); give secrets in files (--secret-file, --password-file, --device-key-file, --client-secret-file, --header-value-file): a secret on the command line may land in the shell history",
			tenant:  true, flags: integrationAddCmd},
		{name: "list", summary: "list the tenant's integrations (never their secrets)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				ins, err := e.api.ListIntegrations(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(client.List[client.Integration]{Items: ins}, integrationTable(ins...))
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

// integrationAddFlags are the flags of "integration add".
type integrationAddFlags struct {
	name, typ                                              string
	url, auth, headerName, tokenURL, tokenCAFile           string
	secret, headerValue, clientSecret, password, deviceKey *secretFlag
	scopes                                                 []string
	caFile, clientCert, clientKey, clientID, topic         string
	broker, username                                       string
	hubHost, deviceID, endpoint                            string
	port                                                   int
	filterTsmIDs, filterDevices, filterGateways            []string
	batchMax                                               int
	batchWait, maxAge                                      time.Duration
	publicKey                                              string
}

// define defines the flags of integration add, by type.
func (f *integrationAddFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "a name for the integration, unique in the tenant (required)")
	fs.StringVar(&f.typ, "type", "", orList(client.IntegrationTypes)+" (required)")

	fs.StringVar(&f.url, "url", "", "webhook: the https URL messages are POSTed to (required)")
	f.secret = newSecretFlag(fs, "secret", "webhook: the signing secret whsec_… (default: generated and shown once; prefer --secret-file)", "webhook: file holding the signing secret")
	fs.StringVar(&f.auth, "auth", "", "webhook: outbound authentication: none, apikey, oauth2 or mtls (default none)")
	fs.StringVar(&f.headerName, "header-name", "", "webhook --auth apikey: the header carrying the key (server default "+webhook.DefaultAPIKeyHeader+")")
	f.headerValue = newSecretFlag(fs, "header-value", "webhook --auth apikey: the key (prefer --header-value-file)", "webhook --auth apikey: file holding the key")
	fs.StringVar(&f.tokenURL, "token-url", "", "webhook --auth oauth2: the https token endpoint (client credentials grant)")
	fs.StringVar(&f.tokenCAFile, "token-ca-file", "", "webhook --auth oauth2: PEM file of the CA that verifies --token-url (default: the system's roots and --ca-file)")
	f.clientSecret = newSecretFlag(fs, "client-secret", "webhook --auth oauth2: the client secret (prefer --client-secret-file)", "webhook --auth oauth2: file holding the client secret")
	fs.Var(listFlag{list: &f.scopes, repeatable: true}, "scope", "webhook --auth oauth2: a scope to request (repeatable, or comma-separated)")

	fs.StringVar(&f.caFile, "ca-file", "", "webhook, mqtt, azure-iothub, aws-iot: PEM file of the CA that verifies the endpoint (default: the system's roots)")
	fs.StringVar(&f.clientCert, "client-cert", "", "webhook (--auth mtls), mqtt: PEM client certificate file for mutual TLS; aws-iot: the thing's certificate (required)")
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
	fs.StringVar(&f.publicKey, "public-key", "", "PEM file of an X25519 public key (iotransit keygen) to seal every payload to")
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
		"url": {hook}, "secret": {hook}, "secret-file": {hook}, "auth": {hook},
		"header-name": {hook}, "header-value": {hook}, "header-value-file": {hook},
		"token-url": {hook}, "token-ca-file": {hook}, "client-secret": {hook}, "client-secret-file": {hook}, "scope": {hook},
		"ca-file":     {hook, mqtt, az, aws},
		"client-cert": {hook, mqtt, aws}, "client-key": {hook, mqtt, aws},
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
	names := slices.Sorted(maps.Keys(given))
	for _, n := range names {
		types, ok := integrationFlagTypes[n]
		if ok && !slices.Contains(types, typ) {
			return nil, usageError("--%s (or %s) does not apply to --type %s; it is for %s", n, envVar(n), typ, strings.Join(types, ", "))
		}
	}
	if typ == client.IntegrationWebhook {
		switch f.auth {
		case "", "none", "apikey", "oauth2", "mtls":
		default:
			return nil, usageError("--auth %q: want none, apikey, oauth2 or mtls", f.auth)
		}
		for _, n := range names {
			if kind, ok := webhookAuthFlags[n]; ok && f.auth != kind {
				return nil, usageError("--%s needs --auth %s", n, kind)
			}
		}
		if f.auth == "mtls" && (f.clientCert == "" || f.clientKey == "") {
			return nil, usageError("--auth mtls needs --client-cert and --client-key")
		}
	}
	if (f.clientCert == "") != (f.clientKey == "") {
		return nil, usageError("give --client-cert and --client-key together")
	}
	if f.batchMax < 0 || f.batchWait < 0 || f.maxAge < 0 || f.port < 0 {
		return nil, usageError("--batch-max, --batch-wait, --max-age and --port must not be negative")
	}

	in := &client.Integration{Name: strings.TrimSpace(f.name), Type: typ,
		Batch:  client.Batching{MaxMessages: f.batchMax, MaxWait: client.Duration(f.batchWait)},
		MaxAge: client.Duration(f.maxAge),
		Filter: client.Filter{Devices: f.filterDevices, Gateways: f.filterGateways},
	}
	for _, s := range f.filterTsmIDs {
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, usageError("--filter-tsmid %q: want a number such as 12100", s)
		}
		in.Filter.TsmIDs = append(in.Filter.TsmIDs, n)
	}
	var err error
	if f.publicKey != "" {
		in.Encryption = &client.Encryption{}
		if in.Encryption.PublicKeyPEM, err = readFlagFile("public-key", f.publicKey); err != nil {
			return nil, err
		}
	}

	// PEM material common to several types.
	var caPEM, certPEM, keyPEM string
	if f.caFile != "" {
		if caPEM, err = readFlagFile("ca-file", f.caFile); err != nil {
			return nil, err
		}
	}
	if f.clientCert != "" {
		if certPEM, err = readFlagFile("client-cert", f.clientCert); err != nil {
			return nil, err
		}
		if keyPEM, err = readFlagFile("client-key", f.clientKey); err != nil {
			return nil, err
		}
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
		w := &client.WebhookConfig{URL: strings.TrimSpace(f.url), CAPEM: caPEM, ClientCertPEM: certPEM, ClientKeyPEM: keyPEM}
		if w.Secret, err = f.secret.Get(onCmdLine); err != nil {
			return nil, err
		}
		if w.Auth, err = f.webhookAuth(onCmdLine); err != nil {
			return nil, err
		}
		in.Webhook = w
	case client.IntegrationMQTT:
		if err := need("broker", f.broker); err != nil {
			return nil, err
		}
		m := &client.MQTTConfig{Broker: strings.TrimSpace(f.broker), ClientID: f.clientID, Username: f.username, Topic: f.topic,
			CAPEM: caPEM, ClientCertPEM: certPEM, ClientKeyPEM: keyPEM}
		if m.Password, err = f.password.Get(onCmdLine); err != nil {
			return nil, err
		}
		in.MQTT = m
	case client.IntegrationAzure:
		if err := need("hub-host", f.hubHost); err != nil {
			return nil, err
		}
		if err := need("device-id", f.deviceID); err != nil {
			return nil, err
		}
		a := &client.AzureConfig{HostName: strings.TrimSpace(f.hubHost), DeviceID: f.deviceID, CAPEM: caPEM, Port: f.port}
		if a.DeviceKey, err = f.deviceKey.Get(onCmdLine); err != nil {
			return nil, err
		}
		if a.DeviceKey == "" {
			return nil, usageError("--type %s needs --device-key-file or --device-key", typ)
		}
		in.Azure = a
	case client.IntegrationAWS:
		for _, n := range [][2]string{{"endpoint", f.endpoint}, {"client-id", f.clientID}, {"topic", f.topic}, {"client-cert", f.clientCert}} {
			if err := need(n[0], n[1]); err != nil {
				return nil, err
			}
		}
		in.AWS = &client.AWSConfig{Endpoint: strings.TrimSpace(f.endpoint), ClientID: f.clientID, Topic: f.topic,
			CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: caPEM, Port: f.port}
	case client.IntegrationWebsocket:
		// Filters, batching and encryption only: clients read the stream.
	}
	return in, nil
}

// webhookAuth returns the outbound authentication of a webhook, nil
// without --auth.
func (f *integrationAddFlags) webhookAuth(onCmdLine map[string]bool) (*client.WebhookAuth, error) {
	if f.auth == "" {
		return nil, nil
	}
	a := &client.WebhookAuth{Kind: f.auth}
	var err error
	switch f.auth {
	case "apikey":
		if a.HeaderValue, err = f.headerValue.Get(onCmdLine); err != nil {
			return nil, err
		}
		if a.HeaderValue == "" {
			return nil, usageError("--auth apikey needs --header-value-file or --header-value")
		}
		a.HeaderName = f.headerName
	case "oauth2":
		if a.ClientSecret, err = f.clientSecret.Get(onCmdLine); err != nil {
			return nil, err
		}
		if a.ClientSecret == "" || f.tokenURL == "" || f.clientID == "" {
			return nil, usageError("--auth oauth2 needs --token-url, --client-id and --client-secret-file (or --client-secret)")
		}
		a.TokenURL, a.ClientID, a.Scopes = f.tokenURL, f.clientID, f.scopes
		if f.tokenCAFile != "" {
			if a.TokenCAPEM, err = readFlagFile("token-ca-file", f.tokenCAFile); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// integrationAddCmd defines the flags of integration add and returns its
// action.
func integrationAddCmd(fs *flag.FlagSet) action {
	f := &integrationAddFlags{}
	f.define(fs)
	return func(ctx context.Context, e *env, _ []string) error {
		given := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
		req, err := f.request(given, e.onCmdLine)
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
		return e.show(in, func(w io.Writer) error {
			if err := integrationTable(*in)(w); err != nil {
				return err
			}
			if secret != "" {
				printSecret(w, "webhook signing secret", secret)
				fmt.Fprintln(w, "The receiver verifies each request's webhook-signature header with it (Standard Webhooks).")
			}
			return nil
		})
	}
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
