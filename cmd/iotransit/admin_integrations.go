package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// "iotransit integration" manages a tenant's integrations: where its
// messages are forwarded (webhook, MQTT broker, Azure IoT Hub, AWS IoT
// Core, or the WebSocket stream), their delivery state and dead letters.

// Integration types, as the API names them.
const (
	integWebhook   = "webhook"
	integMQTT      = "mqtt"
	integAzure     = "azure-iothub"
	integAWS       = "aws-iot"
	integWebsocket = "websocket"
)

var integrationTypes = []string{integWebhook, integMQTT, integAzure, integAWS, integWebsocket}

// The shapes below are the API's JSON (internal/forward), as much of it as
// the tables show; -o json prints the answer itself.

type integrationAuthJSON struct {
	Kind       string   `json:"kind"`
	HeaderName string   `json:"headerName"`
	TokenURL   string   `json:"tokenUrl"`
	ClientID   string   `json:"clientId"`
	Scopes     []string `json:"scopes"`
}

type integrationJSON struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Paused    bool      `json:"paused"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Filter    struct {
		TsmIDs   []int    `json:"tsmIds"`
		Devices  []string `json:"devices"`
		Gateways []string `json:"gateways"`
	} `json:"filter"`
	Batch struct {
		MaxMessages int    `json:"maxMessages"`
		MaxWait     string `json:"maxWait"`
	} `json:"batch"`
	MaxAge     string `json:"maxAge"`
	Encryption *struct {
		KeyID string `json:"keyId"`
	} `json:"encryption"`
	Webhook *struct {
		URL           string               `json:"url"`
		Secret        string               `json:"secret"` // only in the answer to create
		CAPEM         string               `json:"caPem"`
		ClientCertPEM string               `json:"clientCertPem"`
		Auth          *integrationAuthJSON `json:"auth"`
	} `json:"webhook"`
	MQTT *struct {
		Broker        string `json:"broker"`
		ClientID      string `json:"clientId"`
		Username      string `json:"username"`
		Topic         string `json:"topic"`
		CAPEM         string `json:"caPem"`
		ClientCertPEM string `json:"clientCertPem"`
	} `json:"mqtt"`
	Azure *struct {
		HostName string `json:"hostName"`
		DeviceID string `json:"deviceId"`
		CAPEM    string `json:"caPem"`
		Port     int    `json:"port"`
	} `json:"azureIothub"`
	AWS *struct {
		Endpoint string `json:"endpoint"`
		Port     int    `json:"port"`
		ClientID string `json:"clientId"`
		Topic    string `json:"topic"`
		CertPEM  string `json:"certPem"`
		CAPEM    string `json:"caPem"`
	} `json:"awsIot"`
	SecretsSet          []string   `json:"secretsSet"`
	PreviousSecretUntil *time.Time `json:"previousSecretUntil"`
}

type integrationViewJSON struct {
	integrationJSON
	State struct {
		Delivered           uint64     `json:"delivered"`
		Batches             uint64     `json:"batches"`
		Failed              uint64     `json:"failedAttempts"`
		DeadLettered        uint64     `json:"deadLettered"`
		ConsecutiveFailures int        `json:"consecutiveFailures"`
		LastError           string     `json:"lastError"`
		LastErrorAt         *time.Time `json:"lastErrorAt"`
		LastSuccessAt       *time.Time `json:"lastSuccessAt"`
		NextRetryAt         *time.Time `json:"nextRetryAt"`
	} `json:"state"`
	Backlog     uint64 `json:"backlog"`
	DeadLetters uint64 `json:"deadLetters"`
}

type testResultJSON struct {
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latencyMs"`
	Error     string  `json:"error"`
	BatchID   string  `json:"batchId"`
}

type deadLetterJSON struct {
	Seq      uint64    `json:"seq"`
	ID       string    `json:"id"`
	Gateway  string    `json:"gateway"`
	DeadAt   time.Time `json:"deadAt"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
}

// errTestFailed is returned by integration test when the endpoint did not
// accept the test delivery.
var errTestFailed = errors.New("the test delivery failed")

// integrationGroup is "iotransit integration".
var integrationGroup = &adminGroup{
	name:    "integration",
	summary: "forward a tenant's messages to webhooks, MQTT brokers, Azure IoT Hub, AWS IoT Core or the WebSocket stream",
	cmds: []adminCmd{
		{name: "add", synopsis: "--name N --type webhook|mqtt|azure-iothub|aws-iot|websocket [type settings] [--filter-tsmid N --filter-device TUID --filter-gateway SERIAL ...] [--batch-max 100] [--batch-wait 1s] [--max-age 24h] [--public-key F]",
			summary: "create an integration (-h lists each type's settings); give secrets in files (--secret-file, --password-file, --device-key-file, --client-secret-file, --header-value-file): a secret on the command line may land in the shell history",
			tenant:  true, flags: integrationAddCmd},
		{name: "list", summary: "list the tenant's integrations (never their secrets)", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, _ []string) error {
					a, err := e.api.call(ctx, "GET", e.tenantPath("integrations"), nil, nil, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var l struct{ Items []integrationJSON }
					if err := a.decode(&l); err != nil {
						return err
					}
					return e.integrationTable(l.Items...)
				}
			}},
		{name: "get", args: []string{"id"}, summary: "show an integration's settings and delivery state: delivered, failed attempts, dead letters, backlog, last error, last success", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, args []string) error {
					a, err := e.api.call(ctx, "GET", e.tenantPath("integrations", seg(args[0])), nil, nil, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var v integrationViewJSON
					if err := a.decode(&v); err != nil {
						return err
					}
					return printIntegration(e, v)
				}
			}},
		integrationStateCmd("pause", "stop delivering; messages wait in the backlog (up to --max-age)"),
		integrationStateCmd("resume", "deliver again, the backlog first"),
		{name: "delete", args: []string{"id"}, summary: "delete an integration, its backlog position and its dead letters", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, args []string) error {
					if _, err := e.api.call(ctx, "DELETE", e.tenantPath("integrations", seg(args[0])), nil, nil, true); err != nil {
						return err
					}
					if !e.json {
						fmt.Fprintf(e.stdout, "integration %s deleted\n", args[0])
					}
					return nil
				}
			}},
		{name: "test", args: []string{"id"}, summary: "deliver one synthetic message now; prints ok or failed, the latency and the error, and fails when the endpoint did not accept it", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, args []string) error {
					a, err := e.api.call(ctx, "POST", e.tenantPath("integrations", seg(args[0]), "test"), nil, nil, true)
					if err != nil {
						return err
					}
					var r testResultJSON
					if err := a.decode(&r); err != nil {
						return err
					}
					if e.json {
						if err := printJSON(e.stdout, a.Body); err != nil {
							return err
						}
					} else if r.OK {
						fmt.Fprintf(e.stdout, "ok: the test delivery was accepted in %.1f ms (batch %s)\n", r.LatencyMS, r.BatchID)
					} else {
						fmt.Fprintf(e.stdout, "failed: the test delivery was not accepted after %.1f ms: %s (batch %s)\n", r.LatencyMS, orDash(r.Error), r.BatchID)
					}
					if !r.OK {
						return fmt.Errorf("%w: integration %s: %s", errTestFailed, args[0], orDash(r.Error))
					}
					return nil
				}
			}},
		{name: "rotate-secret", args: []string{"id"}, synopsis: "[--overlap 24h]", summary: "give a webhook a new signing secret (shown once); the previous one keeps signing for --overlap", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				overlap := fs.Duration("overlap", 24*time.Hour, "how long the previous secret keeps signing too, so the receiver can switch (0 to 720h)")
				return func(ctx context.Context, e *adminEnv, args []string) error {
					if *overlap < 0 {
						return usageError("--overlap must not be negative")
					}
					body := map[string]string{"overlap": overlap.String()}
					a, err := e.api.call(ctx, "POST", e.tenantPath("integrations", seg(args[0]), "rotate-secret"), nil, body, true)
					if err != nil {
						return err
					}
					if e.json {
						warnSecretInJSON(e)
						return printJSON(e.stdout, a.Body)
					}
					var in integrationJSON
					if err := a.decode(&in); err != nil {
						return err
					}
					if err := e.integrationTable(in); err != nil {
						return err
					}
					if in.Webhook == nil || in.Webhook.Secret == "" {
						return fmt.Errorf("the server's answer holds no new secret (request %s)", a.RequestID)
					}
					printSecret(e.stdout, "new webhook signing secret", in.Webhook.Secret)
					if in.PreviousSecretUntil != nil {
						fmt.Fprintf(e.stdout, "The previous secret keeps signing too until %s: give the receiver the new one before then.\n", fmtTime(in.PreviousSecretUntil))
					} else {
						fmt.Fprintln(e.stdout, "The previous secret no longer signs.")
					}
					return nil
				}
			}},
		{name: "dead-letters", args: []string{"id"}, synopsis: "[--limit N] [--cursor C]", summary: "list the messages the integration gave up on, oldest first", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				limit := fs.Int("limit", 0, "at most this many (server default 100, at most 1000)")
				cursor := fs.String("cursor", "", "the next page, as printed after the previous one")
				return func(ctx context.Context, e *adminEnv, args []string) error {
					q := url.Values{}
					setQuery(q, "cursor", *cursor)
					if *limit != 0 {
						q.Set("limit", strconv.Itoa(*limit))
					}
					a, err := e.api.call(ctx, "GET", e.tenantPath("integrations", seg(args[0]), "dead-letters"), q, nil, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var l struct {
						Items []deadLetterJSON
						Next  string
					}
					if err := a.decode(&l); err != nil {
						return err
					}
					t := newTable(e.stdout, "SEQ", "DEAD-AT", "REASON", "ATTEMPTS", "GATEWAY", "MESSAGE-ID")
					for _, d := range l.Items {
						t.row(strconv.FormatUint(d.Seq, 10), fmtTime(&d.DeadAt), d.Reason, strconv.Itoa(d.Attempts), d.Gateway, d.ID)
					}
					if err := t.flush(); err != nil {
						return err
					}
					if l.Next != "" {
						fmt.Fprintf(e.stderr, "more dead letters: add --cursor %s\n", l.Next)
					}
					return nil
				}
			}},
		{name: "redrive", args: []string{"id"}, synopsis: "[--seq N ...]", summary: "send dead letters to the integration again (all of them when no --seq is given) and remove them from the dead letters", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				var seqs multiFlag
				fs.Var(&seqs, "seq", "the SEQ of a dead letter to re-drive (repeatable, or comma-separated; default: all)")
				return func(ctx context.Context, e *adminEnv, args []string) error {
					body := map[string]any{}
					if len(seqs) > 0 {
						nums := make([]uint64, 0, len(seqs))
						for _, s := range seqs {
							n, err := strconv.ParseUint(s, 10, 64)
							if err != nil || n == 0 {
								return usageError("--seq %q: want the SEQ of a dead letter, as dead-letters lists it", s)
							}
							nums = append(nums, n)
						}
						body["seqs"] = nums
					}
					a, err := e.api.call(ctx, "POST", e.tenantPath("integrations", seg(args[0]), "dead-letters", "redrive"), nil, body, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var r struct {
						Redriven int `json:"redriven"`
					}
					if err := a.decode(&r); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "re-drove %d dead letter(s) of integration %s\n", r.Redriven, args[0])
					return nil
				}
			}},
	},
}

func integrationStateCmd(verb, summary string) adminCmd {
	return adminCmd{name: verb, args: []string{"id"}, summary: summary, tenant: true,
		flags: func(*flag.FlagSet) adminAction {
			return func(ctx context.Context, e *adminEnv, args []string) error {
				a, err := e.api.call(ctx, "POST", e.tenantPath("integrations", seg(args[0]), verb), nil, nil, true)
				if err != nil {
					return err
				}
				if e.json {
					return printJSON(e.stdout, a.Body)
				}
				var in integrationJSON
				if err := a.decode(&in); err != nil {
					return err
				}
				return e.integrationTable(in)
			}
		}}
}

// integrationAddFlags are the flags of "integration add".
type integrationAddFlags struct {
	name, typ                                             string
	url, secret, secretFile                               string
	auth, headerName, headerValue, headerValueFile        string
	tokenURL, tokenCAFile, clientSecret, clientSecretFile string
	scopes                                                multiFlag
	caFile, clientCert, clientKey, clientID, topic        string
	broker, username, password, passwordFile              string
	hubHost, deviceID, deviceKey, deviceKeyFile, endpoint string
	port                                                  int
	filterTsmIDs, filterDevices, filterGateways           multiFlag
	batchMax                                              int
	batchWait, maxAge                                     time.Duration
	publicKey                                             string
}

func (f *integrationAddFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "a name for the integration, unique in the tenant (required)")
	fs.StringVar(&f.typ, "type", "", "webhook, mqtt, azure-iothub, aws-iot or websocket (required)")

	fs.StringVar(&f.url, "url", "", "webhook: the https URL messages are POSTed to (required)")
	fs.StringVar(&f.secret, "secret", "", "webhook: the signing secret whsec_… (default: generated and shown once; prefer --secret-file)")
	fs.StringVar(&f.secretFile, "secret-file", "", "webhook: file holding the signing secret")
	fs.StringVar(&f.auth, "auth", "", "webhook: outbound authentication: none, apikey, oauth2 or mtls (default none)")
	fs.StringVar(&f.headerName, "header-name", "", "webhook --auth apikey: the header carrying the key (server default X-API-Key)")
	fs.StringVar(&f.headerValue, "header-value", "", "webhook --auth apikey: the key (prefer --header-value-file)")
	fs.StringVar(&f.headerValueFile, "header-value-file", "", "webhook --auth apikey: file holding the key")
	fs.StringVar(&f.tokenURL, "token-url", "", "webhook --auth oauth2: the https token endpoint (client credentials grant)")
	fs.StringVar(&f.tokenCAFile, "token-ca-file", "", "webhook --auth oauth2: PEM file of the CA that verifies --token-url (default: the system's roots and --ca-file)")
	fs.StringVar(&f.clientSecret, "client-secret", "", "webhook --auth oauth2: the client secret (prefer --client-secret-file)")
	fs.StringVar(&f.clientSecretFile, "client-secret-file", "", "webhook --auth oauth2: file holding the client secret")
	fs.Var(&f.scopes, "scope", "webhook --auth oauth2: a scope to request (repeatable, or comma-separated)")

	fs.StringVar(&f.caFile, "ca-file", "", "webhook, mqtt, azure-iothub, aws-iot: PEM file of the CA that verifies the endpoint (default: the system's roots)")
	fs.StringVar(&f.clientCert, "client-cert", "", "webhook (--auth mtls), mqtt: PEM client certificate file for mutual TLS; aws-iot: the thing's certificate (required)")
	fs.StringVar(&f.clientKey, "client-key", "", "webhook, mqtt, aws-iot: PEM private key file of --client-cert")
	fs.StringVar(&f.clientID, "client-id", "", "webhook --auth oauth2: the OAuth2 client id; mqtt: the MQTT client id (default generated); aws-iot: the MQTT client id (required)")
	fs.StringVar(&f.topic, "topic", "", "mqtt: the topic template (server default: Thingsee's data stream layout); aws-iot: the topic (required)")

	fs.StringVar(&f.broker, "broker", "", "mqtt: the broker, mqtts://host[:8883] (required; plaintext mqtt:// is refused)")
	fs.StringVar(&f.username, "username", "", "mqtt: the user name")
	fs.StringVar(&f.password, "password", "", "mqtt: the password (prefer --password-file)")
	fs.StringVar(&f.passwordFile, "password-file", "", "mqtt: file holding the password")

	fs.StringVar(&f.hubHost, "hub-host", "", "azure-iothub: the hub's host name, e.g. myhub.azure-devices.net (required)")
	fs.StringVar(&f.deviceID, "device-id", "", "azure-iothub: the device id (required)")
	fs.StringVar(&f.deviceKey, "device-key", "", "azure-iothub: the device's symmetric key, base64 (prefer --device-key-file)")
	fs.StringVar(&f.deviceKeyFile, "device-key-file", "", "azure-iothub: file holding the device key")
	fs.StringVar(&f.endpoint, "endpoint", "", "aws-iot: the account's data endpoint, xxxx-ats.iot.REGION.amazonaws.com (required)")
	fs.IntVar(&f.port, "port", 0, "azure-iothub, aws-iot: the MQTT port (default 8883)")

	fs.Var(&f.filterTsmIDs, "filter-tsmid", "forward only this tsmId, e.g. 12100 (repeatable; default: every message)")
	fs.Var(&f.filterDevices, "filter-device", "forward only this sensor, by tsmTuid (repeatable)")
	fs.Var(&f.filterGateways, "filter-gateway", "forward only messages of this gateway serial (repeatable)")
	fs.IntVar(&f.batchMax, "batch-max", 0, "at most this many messages per delivery, 1 to 1000 (server default 100)")
	fs.DurationVar(&f.batchWait, "batch-wait", 0, "how long a batch's first message waits for more, 10ms to 1m (server default 1s)")
	fs.DurationVar(&f.maxAge, "max-age", 0, "a message still undelivered after this long goes to the dead letters, 1s to 720h (server default 24h)")
	fs.StringVar(&f.publicKey, "public-key", "", "PEM file of an X25519 public key (iotransit keygen) to seal every payload to")
}

// integrationFlagTypes says which types each type-specific flag applies to.
var integrationFlagTypes = map[string][]string{
	"url": {integWebhook}, "secret": {integWebhook}, "secret-file": {integWebhook}, "auth": {integWebhook},
	"header-name": {integWebhook}, "header-value": {integWebhook}, "header-value-file": {integWebhook},
	"token-url": {integWebhook}, "token-ca-file": {integWebhook}, "client-secret": {integWebhook}, "client-secret-file": {integWebhook}, "scope": {integWebhook},
	"ca-file":     {integWebhook, integMQTT, integAzure, integAWS},
	"client-cert": {integWebhook, integMQTT, integAWS}, "client-key": {integWebhook, integMQTT, integAWS},
	"client-id": {integWebhook, integMQTT, integAWS}, "topic": {integMQTT, integAWS},
	"broker": {integMQTT}, "username": {integMQTT}, "password": {integMQTT}, "password-file": {integMQTT},
	"hub-host": {integAzure}, "device-id": {integAzure}, "device-key": {integAzure}, "device-key-file": {integAzure},
	"endpoint": {integAWS}, "port": {integAzure, integAWS},
}

// webhookAuthFlags says which --auth kind each webhook auth flag needs.
var webhookAuthFlags = map[string]string{
	"header-name": "apikey", "header-value": "apikey", "header-value-file": "apikey",
	"token-url": "oauth2", "token-ca-file": "oauth2", "client-id": "oauth2", "client-secret": "oauth2", "client-secret-file": "oauth2", "scope": "oauth2",
}

// integrationFilter is the filter of a request; empty lists match all.
type integrationFilter struct {
	TsmIDs   []int    `json:"tsmIds,omitempty"`
	Devices  []string `json:"devices,omitempty"`
	Gateways []string `json:"gateways,omitempty"`
}

// integrationRequest is the body of POST /v1/tenants/{tenant}/integrations.
type integrationRequest struct {
	Name       string             `json:"name"`
	Type       string             `json:"type"`
	Filter     *integrationFilter `json:"filter,omitempty"`
	Batch      map[string]any     `json:"batch,omitempty"`
	MaxAge     string             `json:"maxAge,omitempty"`
	Encryption map[string]string  `json:"encryption,omitempty"`
	Webhook    map[string]any     `json:"webhook,omitempty"`
	MQTT       map[string]any     `json:"mqtt,omitempty"`
	Azure      map[string]any     `json:"azureIothub,omitempty"`
	AWS        map[string]any     `json:"awsIot,omitempty"`
}

// request checks the flags and builds the request body; given names the
// flags set (on the command line or from the environment).
func (f *integrationAddFlags) request(given map[string]bool) (*integrationRequest, error) {
	typ := strings.TrimSpace(f.typ)
	if typ == "" {
		return nil, usageError("integration add needs --type: %s", strings.Join(integrationTypes, ", "))
	}
	if !slices.Contains(integrationTypes, typ) {
		return nil, usageError("--type %q: want one of %s", f.typ, strings.Join(integrationTypes, ", "))
	}
	if strings.TrimSpace(f.name) == "" {
		return nil, usageError("integration add needs --name")
	}
	names := make([]string, 0, len(given))
	for n := range given {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		types, ok := integrationFlagTypes[n]
		if ok && !slices.Contains(types, typ) {
			return nil, usageError("--%s (or IOTRANSIT_%s) does not apply to --type %s; it is for %s", n, envName(n), typ, strings.Join(types, ", "))
		}
	}
	if typ == integWebhook {
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

	req := &integrationRequest{Name: strings.TrimSpace(f.name), Type: typ}
	if len(f.filterTsmIDs)+len(f.filterDevices)+len(f.filterGateways) > 0 {
		req.Filter = &integrationFilter{Devices: f.filterDevices, Gateways: f.filterGateways}
		for _, s := range f.filterTsmIDs {
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, usageError("--filter-tsmid %q: want a number such as 12100", s)
			}
			req.Filter.TsmIDs = append(req.Filter.TsmIDs, n)
		}
	}
	if f.batchMax > 0 || f.batchWait > 0 {
		req.Batch = map[string]any{}
		if f.batchMax > 0 {
			req.Batch["maxMessages"] = f.batchMax
		}
		if f.batchWait > 0 {
			req.Batch["maxWait"] = f.batchWait.String()
		}
	}
	if f.maxAge > 0 {
		req.MaxAge = f.maxAge.String()
	}
	if f.publicKey != "" {
		pem, err := readFlagFile("public-key", f.publicKey)
		if err != nil {
			return nil, err
		}
		req.Encryption = map[string]string{"publicKeyPem": pem}
	}

	// Values common to several types.
	var caPEM, certPEM, keyPEM string
	var err error
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
	set := func(m map[string]any, k string, v any) {
		switch x := v.(type) {
		case string:
			if x == "" {
				return
			}
		case int:
			if x == 0 {
				return
			}
		case []string:
			if len(x) == 0 {
				return
			}
		}
		m[k] = v
	}
	need := func(flagName, v string) error {
		if strings.TrimSpace(v) == "" {
			return usageError("--type %s needs --%s", typ, flagName)
		}
		return nil
	}

	switch typ {
	case integWebhook:
		if err := need("url", f.url); err != nil {
			return nil, err
		}
		secret, err := optionalSecret("secret", f.secret, f.secretFile)
		if err != nil {
			return nil, err
		}
		w := map[string]any{"url": strings.TrimSpace(f.url)}
		set(w, "secret", secret)
		set(w, "caPem", caPEM)
		set(w, "clientCertPem", certPEM)
		set(w, "clientKeyPem", keyPEM)
		if f.auth != "" {
			auth := map[string]any{"kind": f.auth}
			switch f.auth {
			case "apikey":
				v, err := optionalSecret("header-value", f.headerValue, f.headerValueFile)
				if err != nil {
					return nil, err
				}
				if v == "" {
					return nil, usageError("--auth apikey needs --header-value-file or --header-value")
				}
				set(auth, "headerName", f.headerName)
				auth["headerValue"] = v
			case "oauth2":
				v, err := optionalSecret("client-secret", f.clientSecret, f.clientSecretFile)
				if err != nil {
					return nil, err
				}
				if v == "" || f.tokenURL == "" || f.clientID == "" {
					return nil, usageError("--auth oauth2 needs --token-url, --client-id and --client-secret-file (or --client-secret)")
				}
				auth["tokenUrl"], auth["clientId"], auth["clientSecret"] = f.tokenURL, f.clientID, v
				if f.tokenCAFile != "" {
					pem, err := readFlagFile("token-ca-file", f.tokenCAFile)
					if err != nil {
						return nil, err
					}
					auth["tokenCaPem"] = pem
				}
				set(auth, "scopes", []string(f.scopes))
			}
			w["auth"] = auth
		}
		req.Webhook = w
	case integMQTT:
		if err := need("broker", f.broker); err != nil {
			return nil, err
		}
		pw, err := optionalSecret("password", f.password, f.passwordFile)
		if err != nil {
			return nil, err
		}
		m := map[string]any{"broker": strings.TrimSpace(f.broker)}
		set(m, "clientId", f.clientID)
		set(m, "username", f.username)
		set(m, "password", pw)
		set(m, "topic", f.topic)
		set(m, "caPem", caPEM)
		set(m, "clientCertPem", certPEM)
		set(m, "clientKeyPem", keyPEM)
		req.MQTT = m
	case integAzure:
		if err := need("hub-host", f.hubHost); err != nil {
			return nil, err
		}
		if err := need("device-id", f.deviceID); err != nil {
			return nil, err
		}
		key, err := optionalSecret("device-key", f.deviceKey, f.deviceKeyFile)
		if err != nil {
			return nil, err
		}
		if key == "" {
			return nil, usageError("--type %s needs --device-key-file or --device-key", typ)
		}
		a := map[string]any{"hostName": strings.TrimSpace(f.hubHost), "deviceId": f.deviceID, "deviceKey": key}
		set(a, "caPem", caPEM)
		set(a, "port", f.port)
		req.Azure = a
	case integAWS:
		for _, n := range [][2]string{{"endpoint", f.endpoint}, {"client-id", f.clientID}, {"topic", f.topic}, {"client-cert", f.clientCert}} {
			if err := need(n[0], n[1]); err != nil {
				return nil, err
			}
		}
		a := map[string]any{"endpoint": strings.TrimSpace(f.endpoint), "clientId": f.clientID, "topic": f.topic, "certPem": certPEM, "keyPem": keyPEM}
		set(a, "caPem", caPEM)
		set(a, "port", f.port)
		req.AWS = a
	case integWebsocket:
		// Filters, batching and encryption only: clients read the stream.
	}
	return req, nil
}

func integrationAddCmd(fs *flag.FlagSet) adminAction {
	f := &integrationAddFlags{}
	f.define(fs)
	return func(ctx context.Context, e *adminEnv, _ []string) error {
		given := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
		body, err := f.request(given)
		if err != nil {
			return err
		}
		a, err := e.api.call(ctx, "POST", e.tenantPath("integrations"), nil, body, true)
		if err != nil {
			return err
		}
		var in integrationJSON
		if err := a.decode(&in); err != nil {
			return err
		}
		secret := ""
		if in.Webhook != nil {
			secret = in.Webhook.Secret
		}
		if e.json {
			if secret != "" {
				warnSecretInJSON(e)
			}
			return printJSON(e.stdout, a.Body)
		}
		if err := e.integrationTable(in); err != nil {
			return err
		}
		if secret != "" {
			printSecret(e.stdout, "webhook signing secret", secret)
			fmt.Fprintln(e.stdout, "The receiver verifies each request's webhook-signature header with it (Standard Webhooks).")
		}
		return nil
	}
}

// warnSecretInJSON tells on stderr that the JSON answer holds a secret that
// is not shown again.
func warnSecretInJSON(e *adminEnv) {
	fmt.Fprintln(e.stderr, "note: the answer holds the webhook signing secret (webhook.secret), shown only once; store it now, it cannot be shown again")
}

// optionalSecret returns a secret given directly or in a file ("" when
// neither is given).
func optionalSecret(name, value, file string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", usageError("give --%s or --%s-file, not both (mind IOTRANSIT_%s and IOTRANSIT_%s_FILE)", name, name, envName(name), envName(name))
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--%s-file: %w", name, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("--%s-file %s is empty", name, file)
		}
		return v, nil
	}
	return strings.TrimSpace(value), nil
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

func envName(flagName string) string {
	return strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// target is where an integration delivers, in a few words.
func (in *integrationJSON) target() string {
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

func (e *adminEnv) integrationTable(items ...integrationJSON) error {
	t := newTable(e.stdout, "ID", "NAME", "TYPE", "PAUSED", "TARGET")
	for _, in := range items {
		t.row(in.ID, in.Name, in.Type, yesNo(in.Paused), in.target())
	}
	return t.flush()
}

func fmtFilter(in *integrationJSON) string {
	var parts []string
	if f := in.Filter; len(f.TsmIDs) > 0 {
		ids := make([]string, len(f.TsmIDs))
		for i, id := range f.TsmIDs {
			ids[i] = strconv.Itoa(id)
		}
		parts = append(parts, "tsmIds="+strings.Join(ids, ","))
	}
	if len(in.Filter.Devices) > 0 {
		parts = append(parts, "devices="+strings.Join(in.Filter.Devices, ","))
	}
	if len(in.Filter.Gateways) > 0 {
		parts = append(parts, "gateways="+strings.Join(in.Filter.Gateways, ","))
	}
	if len(parts) == 0 {
		return "every message"
	}
	return strings.Join(parts, " ")
}

func pinned(caPEM string) string {
	if caPEM != "" {
		return "pinned CA"
	}
	return "system roots"
}

func printIntegration(e *adminEnv, v integrationViewJSON) error {
	in := &v.integrationJSON
	t := newTable(e.stdout, "ID:", in.ID)
	t.row("NAME:", in.Name)
	t.row("TYPE:", in.Type)
	t.row("TENANT:", in.Tenant)
	t.row("PAUSED:", yesNo(in.Paused))
	t.row("TARGET:", in.target())
	switch {
	case in.Webhook != nil:
		w := in.Webhook
		auth := "none"
		if a := w.Auth; a != nil && a.Kind != "" {
			auth = a.Kind
			switch a.Kind {
			case "apikey":
				auth += " (header " + orDefault(a.HeaderName, "X-API-Key") + ")"
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
	t.row("FILTER:", fmtFilter(in))
	t.row("BATCH:", fmt.Sprintf("up to %d messages, waiting up to %s", in.Batch.MaxMessages, in.Batch.MaxWait))
	t.row("MAX-AGE:", in.MaxAge)
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
	fmt.Fprintln(e.stdout)
	t = newTable(e.stdout, "DELIVERED:", strconv.FormatUint(s.Delivered, 10))
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

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
