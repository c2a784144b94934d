package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Integration types.
const (
	IntegrationWebhook   = "webhook"
	IntegrationMQTT      = "mqtt"
	IntegrationAzure     = "azure-iothub"
	IntegrationAWS       = "aws-iot"
	IntegrationWebsocket = "websocket"
)

// IntegrationTypes lists every integration type.
var IntegrationTypes = []string{IntegrationWebhook, IntegrationMQTT, IntegrationAzure, IntegrationAWS, IntegrationWebsocket}

// Duration is a time.Duration written as a Go duration string in JSON
// ("24h0m0s", and "24h" or "90s" are read).
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "90s" or "24h".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`a duration is a string such as "30s" or "24h"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"30s\" or \"24h\"", s)
	}
	*d = Duration(v)
	return nil
}

// Filter selects the messages an integration receives; empty lists match all.
type Filter struct {
	TsmIDs   []int    `json:"tsmIds,omitempty"`
	Devices  []string `json:"devices,omitempty"`  // tsmTuid values
	Gateways []string `json:"gateways,omitempty"` // gateway serials
}

// Matches reports whether the filter selects a message of sensor tuid and
// type tsmID that gateway sent.
func (f Filter) Matches(gateway, tuid string, tsmID int) bool {
	return (len(f.Gateways) == 0 || slices.Contains(f.Gateways, gateway)) &&
		(len(f.Devices) == 0 || slices.Contains(f.Devices, tuid)) &&
		(len(f.TsmIDs) == 0 || slices.Contains(f.TsmIDs, tsmID))
}

// Batching bounds a batch by count and by the time its first message waits.
type Batching struct {
	MaxMessages int      `json:"maxMessages"`
	MaxWait     Duration `json:"maxWait"`
}

// Delivery tunes an integration's deliveries. Concurrency is how many
// batches are in flight at once (lanes): each device's messages always
// take the same lane, so every device's order is kept. Webhooks take 1 to
// 32 (default 4); the other types deliver one batch at a time (1). With
// more than one lane, a batch holds what is waiting when its lane is free
// (a busy lane gathers for up to 2 ms per lane, at most 20 ms and
// batch.maxWait, so batches grow with the rate); Linger (optional, at most
// batch.maxWait) lets it wait that long for more.
type Delivery struct {
	Concurrency int      `json:"concurrency"`
	Linger      Duration `json:"linger,omitempty"`
}

// Encryption seals payloads to the customer's public key (HPKE).
type Encryption struct {
	PublicKeyPEM string `json:"publicKeyPem"`
	KeyID        string `json:"keyId,omitempty"`
}

// WebhookAuth is outbound authentication of a webhook.
type WebhookAuth struct {
	Kind         string   `json:"kind"` // none, apikey, oauth2, mtls
	HeaderName   string   `json:"headerName,omitempty"`
	HeaderValue  string   `json:"headerValue,omitempty"` // secret: write only
	TokenURL     string   `json:"tokenUrl,omitempty"`
	ClientID     string   `json:"clientId,omitempty"`
	ClientSecret string   `json:"clientSecret,omitempty"` // secret: write only
	Scopes       []string `json:"scopes,omitempty"`
	TokenCAPEM   string   `json:"tokenCaPem,omitempty"`
}

// WebhookConfig is an HTTPS POST target.
type WebhookConfig struct {
	URL string `json:"url"`
	// Secret is the Standard Webhooks signing secret (whsec_…); generated and
	// returned once when omitted. Write only.
	Secret        string       `json:"secret,omitempty"`
	CAPEM         string       `json:"caPem,omitempty"`
	ClientCertPEM string       `json:"clientCertPem,omitempty"`
	ClientKeyPEM  string       `json:"clientKeyPem,omitempty"` // secret: write only
	Auth          *WebhookAuth `json:"auth,omitempty"`
}

// MQTTConfig is the customer's MQTT broker.
type MQTTConfig struct {
	Broker        string `json:"broker"` // mqtts://host:port
	ClientID      string `json:"clientId,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"` // secret: write only
	Topic         string `json:"topic,omitempty"`    // template; default Thingsee's data stream layout
	CAPEM         string `json:"caPem,omitempty"`
	ClientCertPEM string `json:"clientCertPem,omitempty"`
	ClientKeyPEM  string `json:"clientKeyPem,omitempty"` // secret: write only
}

// AzureConfig is an Azure IoT Hub device identity.
type AzureConfig struct {
	HostName  string `json:"hostName"` // myhub.azure-devices.net
	DeviceID  string `json:"deviceId"`
	DeviceKey string `json:"deviceKey,omitempty"` // secret: write only
	CAPEM     string `json:"caPem,omitempty"`
	Port      int    `json:"port,omitempty"`
}

// AWSConfig is an AWS IoT Core thing.
type AWSConfig struct {
	Endpoint string `json:"endpoint"` // xxxx-ats.iot.region.amazonaws.com
	Port     int    `json:"port,omitempty"`
	ClientID string `json:"clientId"`
	Topic    string `json:"topic"`
	CertPEM  string `json:"certPem"`
	KeyPEM   string `json:"keyPem,omitempty"` // secret: write only
	CAPEM    string `json:"caPem,omitempty"`
}

// Integration is one customer endpoint of a tenant: the body that creates
// one (Name, Type and the settings object of the type; none for websocket)
// and what the API answers. Secret members are write only: an answer names
// the secrets set in SecretsSet, never their values (except a webhook
// secret the server generated, in the answer that made it).
type Integration struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Paused    bool      `json:"paused"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Filter    Filter    `json:"filter"`
	Batch     Batching  `json:"batch"`
	// Delivery tunes how deliveries overlap; zero values take the
	// defaults of the integration's type.
	Delivery   Delivery       `json:"delivery"`
	MaxAge     Duration       `json:"maxAge"`
	Encryption *Encryption    `json:"encryption,omitempty"`
	Webhook    *WebhookConfig `json:"webhook,omitempty"`
	MQTT       *MQTTConfig    `json:"mqtt,omitempty"`
	Azure      *AzureConfig   `json:"azureIothub,omitempty"`
	AWS        *AWSConfig     `json:"awsIot,omitempty"`
	// SecretsSet names the secrets the integration holds (never their values).
	SecretsSet []string `json:"secretsSet,omitempty"`
	// PreviousSecretUntil tells until when the previous webhook secret
	// still signs.
	PreviousSecretUntil *time.Time `json:"previousSecretUntil,omitempty"`
	// ClearSecrets (write only, in an update) names secrets to remove, as
	// listed in SecretsSet; secrets omitted from an update are kept.
	ClearSecrets []string `json:"clearSecrets,omitempty"`
}

// IntegrationState is an integration's delivery state, as counted since
// its creation.
type IntegrationState struct {
	Delivered    uint64 `json:"delivered"`
	Batches      uint64 `json:"batches"`
	Failed       uint64 `json:"failedAttempts"`
	DeadLettered uint64 `json:"deadLettered"`
	// ConsecutiveFailures counts the failed attempts since the last
	// success.
	ConsecutiveFailures int `json:"consecutiveFailures"`
	// LastError is a short public description of the last failure, e.g.
	// "HTTP 503" or "timeout".
	LastError   string     `json:"lastError,omitempty"`
	LastErrorAt *time.Time `json:"lastErrorAt,omitempty"`
	// LastErrorResolvedAt is when a delivery first succeeded after
	// LastError: set, the last error is past; absent while it lasts.
	LastErrorResolvedAt *time.Time `json:"lastErrorResolvedAt,omitempty"`
	LastSuccessAt       *time.Time `json:"lastSuccessAt,omitempty"`
	LastAttemptAt       *time.Time `json:"lastAttemptAt,omitempty"`
	// NextRetryAt is when the failing batch is tried again.
	NextRetryAt *time.Time `json:"nextRetryAt,omitempty"`
	// Node is the node delivering the integration.
	Node string `json:"node,omitempty"`
	// AckedThrough is the stream sequence up to which this integration's
	// messages are delivered or dead-lettered.
	AckedThrough uint64 `json:"ackedThrough,omitempty"`
}

// Health words of an integration (IntegrationView.Health).
const (
	// HealthOK: delivering, or nothing to deliver.
	HealthOK = "ok"
	// HealthFailing: the last delivery failed and none has succeeded
	// since; the batch is retried (NextRetryAt).
	HealthFailing = "failing"
	// HealthPaused: paused; messages wait in the backlog.
	HealthPaused = "paused"
	// HealthDeadLetters: delivering, but dead letters wait for re-drive.
	HealthDeadLetters = "dead-letters"
)

// IntegrationView is an integration with its delivery state, the answer of
// GetIntegration and the items of ListIntegrations.
type IntegrationView struct {
	Integration
	// Health sums the state up: ok, failing, paused or dead-letters
	// (HealthOK, ...), the first that applies of paused, failing,
	// dead-letters.
	Health string           `json:"health"`
	State  IntegrationState `json:"state"`
	// Backlog counts the messages selected and not yet delivered or
	// dead-lettered (0 for websocket).
	Backlog uint64 `json:"backlog"`
	// DeadLetters counts the dead letters waiting (0 for websocket).
	DeadLetters uint64 `json:"deadLetters"`
}

// Codes of a failed test delivery (TestResult.Code): what kind of failure,
// in stable words a client can act on.
const (
	// TestTLSUnknownAuthority: the endpoint's certificate is not signed by
	// a CA the integration trusts (its pinned CA, else the system's roots).
	TestTLSUnknownAuthority = "tls_unknown_authority"
	// TestTLSNameMismatch: the endpoint's certificate is for another host
	// name than the integration's.
	TestTLSNameMismatch = "tls_name_mismatch"
	// TestTLSExpired: the endpoint's certificate is expired or not yet
	// valid.
	TestTLSExpired = "tls_expired"
	// TestConfigurationRefused: the integration's settings could not make a
	// connection (e.g. an address not allowed).
	TestConfigurationRefused = "configuration_refused"
	// TestTimeout: the endpoint did not answer in time.
	TestTimeout = "timeout"
	// TestDeliveryFailed: any other failure; Error says which.
	TestDeliveryFailed = "delivery_failed"
)

// TestResult is the outcome of a test delivery.
type TestResult struct {
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latencyMs"`
	// Error is a short public description of the failure, e.g. "HTTP 503"
	// or "TLS: certificate not trusted".
	Error string `json:"error,omitempty"`
	// Code classifies a failure (TestTLSUnknownAuthority, ...); absent
	// when OK.
	Code    string `json:"code,omitempty"`
	BatchID string `json:"batchId"`
}

// DeadLetter is a message an integration gave up on.
type DeadLetter struct {
	// Seq is its position among the integration's dead letters; give it
	// to Redrive.
	Seq uint64 `json:"seq"`
	// OriginalSeq is its seq in the tenant's message stream.
	OriginalSeq uint64    `json:"originalSeq"`
	ID          string    `json:"id"`
	Gateway     string    `json:"gateway"`
	ReceivedAt  time.Time `json:"receivedAt"`
	DeadAt      time.Time `json:"deadAt"`
	// Reason is the last delivery error.
	Reason   string `json:"reason"`
	Attempts int    `json:"attempts"`
	// Message is the message; without messages:read only its envelope
	// members (tsmId, tsmEv, tsmTuid, tsmTs, tsmCloudTs, tsmGw,
	// deploymentGroupId).
	Message json.RawMessage `json:"message"`
}

// RotateSecretRequest is the body of POST
// /v1/tenants/{tenant}/integrations/{id}/rotate-secret.
type RotateSecretRequest struct {
	// Overlap is how long the previous secret keeps signing, a Go duration
	// from 0 to 720h (time.Duration.String); "" for the default, 24h.
	Overlap string `json:"overlap,omitempty"`
}

// RedriveRequest is the body of POST
// /v1/tenants/{tenant}/integrations/{id}/dead-letters/redrive.
type RedriveRequest struct {
	// Seqs are the dead letters to re-drive; empty means all.
	Seqs []uint64 `json:"seqs,omitempty"`
}

// RedriveResult is the answer of a redrive.
type RedriveResult struct {
	// Redriven counts the dead letters re-driven.
	Redriven int `json:"redriven"`
}

// IntegrationPatch is the body of PATCH
// /v1/tenants/{tenant}/integrations/{id}: the members given are merged over
// the integration's settings, the others stay. A settings object given
// replaces the members it holds (give its whole object, secrets aside:
// secrets omitted are kept).
type IntegrationPatch struct {
	Name *string `json:"name,omitempty"`
	// Filter replaces the whole filter (an empty list empties it).
	Filter *Filter   `json:"filter,omitempty"`
	Batch  *Batching `json:"batch,omitempty"`
	MaxAge *Duration `json:"maxAge,omitempty"`
	// Delivery sets how deliveries overlap (webhooks).
	Delivery *Delivery `json:"delivery,omitempty"`
	// Encryption sets new encryption settings.
	Encryption *Encryption `json:"encryption,omitempty"`
	// RemoveEncryption stops sealing payloads (Encryption must be nil).
	RemoveEncryption bool           `json:"-"`
	Webhook          *WebhookConfig `json:"webhook,omitempty"`
	MQTT             *MQTTConfig    `json:"mqtt,omitempty"`
	Azure            *AzureConfig   `json:"azureIothub,omitempty"`
	AWS              *AWSConfig     `json:"awsIot,omitempty"`
	// ClearSecrets names secrets to remove, as SecretsSet lists them.
	ClearSecrets []string `json:"clearSecrets,omitempty"`
}

// MarshalJSON writes the patch, with "encryption": null when
// RemoveEncryption is set, and a Filter given whole: each of its lists,
// [] when empty (a list left out would keep the stored one).
func (p IntegrationPatch) MarshalJSON() ([]byte, error) {
	type plain IntegrationPatch
	type wholeFilter struct {
		TsmIDs   []int    `json:"tsmIds"`
		Devices  []string `json:"devices"`
		Gateways []string `json:"gateways"`
	}
	body := struct {
		plain
		Filter *wholeFilter `json:"filter,omitempty"`
	}{plain: plain(p)}
	if f := p.Filter; f != nil {
		body.Filter = &wholeFilter{TsmIDs: append([]int{}, f.TsmIDs...), Devices: append([]string{}, f.Devices...), Gateways: append([]string{}, f.Gateways...)}
	}
	b, err := json.Marshal(body)
	if err != nil || !p.RemoveEncryption || p.Encryption != nil {
		return b, err
	}
	if len(b) == 2 { // {}
		return []byte(`{"encryption":null}`), nil
	}
	return append([]byte(`{"encryption":null,`), b[1:]...), nil
}

// DeadLetterQuery selects a page of an integration's dead letters, oldest
// first.
type DeadLetterQuery struct {
	// Limit is the page size, 1 to 1000 (0: the server's default, 100).
	Limit int
	// Cursor is a previous page's Next.
	Cursor string
}

func (q DeadLetterQuery) values() url.Values {
	v := url.Values{}
	setInt(v, "limit", q.Limit)
	setString(v, "cursor", q.Cursor)
	return v
}

func integrationPath(tenant, id string, segs ...string) string {
	return path(append([]string{"tenants", tenant, "integrations", id}, segs...)...)
}

// CreateIntegration creates an integration. A webhook created without a
// secret gets one, in Webhook.Secret of this answer only.
func (c *Client) CreateIntegration(ctx context.Context, tenant string, in Integration) (*Integration, error) {
	return post[Integration](ctx, c, path("tenants", tenant, "integrations"), in)
}

// ListIntegrations lists a tenant's integrations, oldest first, each with
// its delivery state, backlog and dead letters.
func (c *Client) ListIntegrations(ctx context.Context, tenant string) ([]IntegrationView, error) {
	return items(get[List[IntegrationView]](ctx, c, path("tenants", tenant, "integrations"), nil))
}

// GetIntegration returns an integration with its delivery state, backlog
// and dead letters.
func (c *Client) GetIntegration(ctx context.Context, tenant, id string) (*IntegrationView, error) {
	return get[IntegrationView](ctx, c, integrationPath(tenant, id), nil)
}

// UpdateIntegration merges patch over an integration's settings.
func (c *Client) UpdateIntegration(ctx context.Context, tenant, id string, patch IntegrationPatch) (*Integration, error) {
	return call[Integration](ctx, c, request{method: http.MethodPatch, path: integrationPath(tenant, id), body: patch, auth: true})
}

// PauseIntegration stops an integration's deliveries; messages wait.
func (c *Client) PauseIntegration(ctx context.Context, tenant, id string) (*Integration, error) {
	return post[Integration](ctx, c, integrationPath(tenant, id, "pause"), nil)
}

// ResumeIntegration resumes a paused integration's deliveries.
func (c *Client) ResumeIntegration(ctx context.Context, tenant, id string) (*Integration, error) {
	return post[Integration](ctx, c, integrationPath(tenant, id, "resume"), nil)
}

// RetryIntegrationNow ends the backoff wait of the integration's failing
// batch: the node delivering it tries it again at once. An integration not
// waiting to retry is left as it is; a paused one is refused
// (forward.integration_paused).
func (c *Client) RetryIntegrationNow(ctx context.Context, tenant, id string) (*Integration, error) {
	return post[Integration](ctx, c, integrationPath(tenant, id, "retry-now"), nil)
}

// DeleteIntegration deletes an integration; its deliveries stop.
func (c *Client) DeleteIntegration(ctx context.Context, tenant, id string) error {
	return c.noContent(ctx, request{method: http.MethodDelete, path: integrationPath(tenant, id), auth: true})
}

// TestIntegration delivers one synthetic message to the integration's
// endpoint now. A delivery the endpoint refused is a TestResult with OK
// false, not an error.
func (c *Client) TestIntegration(ctx context.Context, tenant, id string) (*TestResult, error) {
	return post[TestResult](ctx, c, integrationPath(tenant, id, "test"), nil)
}

// RotateSecret gives a webhook a new signing secret, in Webhook.Secret of
// this answer only; the previous one keeps signing for req.Overlap.
func (c *Client) RotateSecret(ctx context.Context, tenant, id string, req RotateSecretRequest) (*Integration, error) {
	return post[Integration](ctx, c, integrationPath(tenant, id, "rotate-secret"), req)
}

// ListDeadLetters returns a page of an integration's dead letters, oldest
// first. Each dead letter spends one read of the credential's read budget:
// a page may be Partial.
func (c *Client) ListDeadLetters(ctx context.Context, tenant, id string, q DeadLetterQuery) (*Page[DeadLetter], error) {
	return get[Page[DeadLetter]](ctx, c, integrationPath(tenant, id, "dead-letters"), q.values())
}

// AllDeadLetters walks every page of an integration's dead letters from
// q.Cursor on.
func (c *Client) AllDeadLetters(ctx context.Context, tenant, id string, q DeadLetterQuery) iter.Seq2[DeadLetter, error] {
	return walk(ctx, q.Cursor, func(ctx context.Context, cursor string) (*Page[DeadLetter], error) {
		q.Cursor = cursor
		return c.ListDeadLetters(ctx, tenant, id, q)
	})
}

// Redrive delivers dead letters again, by their Seq (none: all of them).
func (c *Client) Redrive(ctx context.Context, tenant, id string, seqs ...uint64) (*RedriveResult, error) {
	return post[RedriveResult](ctx, c, integrationPath(tenant, id, "dead-letters", "redrive"), RedriveRequest{Seqs: seqs})
}
