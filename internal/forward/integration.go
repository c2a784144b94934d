package forward

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Integration types.
const (
	TypeWebhook   = "webhook"
	TypeMQTT      = "mqtt"
	TypeAzure     = "azure-iothub"
	TypeAWS       = "aws-iot"
	TypeWebsocket = "websocket"
)

// Types lists every integration type.
var Types = []string{TypeWebhook, TypeMQTT, TypeAzure, TypeAWS, TypeWebsocket}

// Faults a client can see.
var (
	ErrIntegrationInvalid  = fault.Define("forward.integration_invalid", fault.InvalidArgument, "the integration is not valid")
	ErrIntegrationNotFound = fault.Define("forward.integration_not_found", fault.NotFound, "no such integration")
	ErrNameTaken           = fault.Define("forward.name_taken", fault.Conflict, "an integration with this name exists")
)

// Duration is a time.Duration written as a Go duration string in JSON ("24h").
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

// Batching bounds a batch by count and by the time its first message waits.
type Batching struct {
	MaxMessages int      `json:"maxMessages"`
	MaxWait     Duration `json:"maxWait"`
}

// Encryption seals payloads to the customer's public key (HPKE).
type Encryption struct {
	PublicKeyPEM string `json:"publicKeyPem"`
	KeyID        string `json:"keyId,omitempty"`
}

// AuthConfig is outbound authentication of a webhook.
type AuthConfig struct {
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
	Secret        string      `json:"secret,omitempty"`
	CAPEM         string      `json:"caPem,omitempty"`
	ClientCertPEM string      `json:"clientCertPem,omitempty"`
	ClientKeyPEM  string      `json:"clientKeyPem,omitempty"` // secret: write only
	Auth          *AuthConfig `json:"auth,omitempty"`
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

// Integration is one customer endpoint of a tenant. Secrets are not in it:
// they are kept apart, sealed by kms, and never shown.
type Integration struct {
	ID         string         `json:"id"`
	Tenant     string         `json:"tenant"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Paused     bool           `json:"paused"`
	CreatedAt  time.Time      `json:"createdAt"`
	UpdatedAt  time.Time      `json:"updatedAt"`
	Filter     Filter         `json:"filter"`
	Batch      Batching       `json:"batch"`
	MaxAge     Duration       `json:"maxAge"`
	Encryption *Encryption    `json:"encryption,omitempty"`
	Webhook    *WebhookConfig `json:"webhook,omitempty"`
	MQTT       *MQTTConfig    `json:"mqtt,omitempty"`
	Azure      *AzureConfig   `json:"azureIothub,omitempty"`
	AWS        *AWSConfig     `json:"awsIot,omitempty"`
	// SecretsSet names the secrets the integration holds (never their values).
	SecretsSet []string `json:"secretsSet,omitempty"`
	// SecretRotation tells until when the previous webhook secret still signs.
	PreviousSecretUntil *time.Time `json:"previousSecretUntil,omitempty"`
	// ClearSecrets (write only, in an update) names secrets to remove, as
	// listed in SecretsSet; secrets omitted from an update are kept.
	ClearSecrets []string `json:"clearSecrets,omitempty"`
}

// Secrets are an integration's credentials, stored sealed.
type Secrets struct {
	WebhookSecret        string    `json:"webhookSecret,omitempty"`
	WebhookPrevious      string    `json:"webhookPrevious,omitempty"`
	WebhookPreviousUntil time.Time `json:"webhookPreviousUntil,omitzero"`
	AuthHeaderValue      string    `json:"authHeaderValue,omitempty"`
	OAuthClientSecret    string    `json:"oauthClientSecret,omitempty"`
	ClientKeyPEM         string    `json:"clientKeyPem,omitempty"`
	MQTTPassword         string    `json:"mqttPassword,omitempty"`
	AzureDeviceKey       string    `json:"azureDeviceKey,omitempty"`
	AWSKeyPEM            string    `json:"awsKeyPem,omitempty"`
	// WebhookURLQuery is the query of the webhook URL: endpoints such as
	// Azure Functions (?code=) or signed URLs carry their key there.
	WebhookURLQuery string `json:"webhookUrlQuery,omitempty"`
}

// WebhookURL is the URL to post to: the shown URL with its sealed query.
func (s Secrets) WebhookURL(shown string) string {
	if s.WebhookURLQuery == "" {
		return shown
	}
	base, _, _ := strings.Cut(shown, "?")
	return base + "?" + s.WebhookURLQuery
}

// redactedValue stands for every query value of a shown webhook URL.
const redactedValue = "redacted"

// redactQuery keeps a query's parameter names and hides its values.
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok {
			parts[i] = k + "=" + redactedValue
		}
	}
	return strings.Join(parts, "&")
}

// clear removes the named secrets (names as in names()).
func (s *Secrets) clear(names []string) error {
	fields := map[string]*string{
		"webhook.secret": &s.WebhookSecret, "webhook.previousSecret": &s.WebhookPrevious,
		"auth.headerValue": &s.AuthHeaderValue, "auth.clientSecret": &s.OAuthClientSecret,
		"clientKeyPem": &s.ClientKeyPEM, "mqtt.password": &s.MQTTPassword,
		"azureIothub.deviceKey": &s.AzureDeviceKey, "awsIot.keyPem": &s.AWSKeyPEM,
		"webhook.urlQuery": &s.WebhookURLQuery,
	}
	for _, n := range names {
		f, ok := fields[n]
		if !ok {
			return ErrIntegrationInvalid.WithDetail("clearSecrets: %q is not a secret name", truncate(n, 40))
		}
		*f = ""
	}
	return nil
}

// names lists the secrets that are set.
func (s Secrets) names() []string {
	var out []string
	add := func(name, v string) {
		if v != "" {
			out = append(out, name)
		}
	}
	add("webhook.secret", s.WebhookSecret)
	add("webhook.previousSecret", s.WebhookPrevious)
	add("auth.headerValue", s.AuthHeaderValue)
	add("auth.clientSecret", s.OAuthClientSecret)
	add("clientKeyPem", s.ClientKeyPEM)
	add("mqtt.password", s.MQTTPassword)
	add("azureIothub.deviceKey", s.AzureDeviceKey)
	add("awsIot.keyPem", s.AWSKeyPEM)
	add("webhook.urlQuery", s.WebhookURLQuery)
	return out
}

// origin is the scheme and authority of a URL, the place its secrets go.
func origin(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return raw
	}
	return strings.ToLower(u.Scheme + "://" + u.Host)
}

// forgetRetargeted drops the secrets that would be sent to, or derived
// for, an endpoint the update moves elsewhere: who may change an
// integration must not be able to point its stored credentials at a server
// of their own. Secrets given in the update are taken afterwards; one that
// is not given again is missing, and the update is refused as incomplete.
// Keys that only sign (the webhook secret, TLS client keys) stay.
func (s *Secrets) forgetRetargeted(old, upd Integration) {
	if ow, nw := old.Webhook, upd.Webhook; ow != nil && nw != nil {
		if origin(ow.URL) != origin(nw.URL) {
			// The API key header, the OAuth2 access token and the URL's
			// query all go to the webhook URL.
			s.AuthHeaderValue, s.OAuthClientSecret, s.WebhookURLQuery = "", "", ""
		}
		var ot, nt string
		if ow.Auth != nil {
			ot = origin(ow.Auth.TokenURL)
		}
		if nw.Auth != nil {
			nt = origin(nw.Auth.TokenURL)
		}
		if ot != nt {
			s.OAuthClientSecret = ""
		}
	}
	if om, nm := old.MQTT, upd.MQTT; om != nil && nm != nil && origin(om.Broker) != origin(nm.Broker) {
		s.MQTTPassword = ""
	}
	if oa, na := old.Azure, upd.Azure; oa != nil && na != nil && (!strings.EqualFold(oa.HostName, na.HostName) || oa.Port != na.Port) {
		s.AzureDeviceKey = ""
	}
}

// extractSecrets moves the write-only fields of in into a Secrets value
// (keeping old's where in leaves them empty) and blanks them in in.
func extractSecrets(in *Integration, old Secrets) Secrets {
	s := old
	take := func(dst *string, src *string) {
		if *src != "" {
			*dst = *src
			*src = ""
		}
	}
	if w := in.Webhook; w != nil {
		take(&s.WebhookSecret, &w.Secret)
		// The URL's query is sealed; the URL keeps it redacted. Sending
		// back the redacted form (as an update copied from GET does)
		// keeps the sealed query; a URL without a query has none.
		base, q, hasQuery := strings.Cut(w.URL, "?")
		switch {
		case !hasQuery:
			s.WebhookURLQuery = ""
		case q != redactQuery(q) || old.WebhookURLQuery == "" || q != redactQuery(old.WebhookURLQuery):
			s.WebhookURLQuery = q
		}
		if s.WebhookURLQuery != "" {
			w.URL = base + "?" + redactQuery(s.WebhookURLQuery)
		}
		take(&s.ClientKeyPEM, &w.ClientKeyPEM)
		if w.Auth != nil {
			take(&s.AuthHeaderValue, &w.Auth.HeaderValue)
			take(&s.OAuthClientSecret, &w.Auth.ClientSecret)
		}
	}
	if m := in.MQTT; m != nil {
		take(&s.MQTTPassword, &m.Password)
		take(&s.ClientKeyPEM, &m.ClientKeyPEM)
	}
	if a := in.Azure; a != nil {
		take(&s.AzureDeviceKey, &a.DeviceKey)
	}
	if a := in.AWS; a != nil {
		take(&s.AWSKeyPEM, &a.KeyPEM)
	}
	return s
}

// Defaults and bounds.
const (
	DefaultMaxMessages = 100
	MaxMaxMessages     = 1000
	DefaultMaxWait     = Duration(time.Second)
	DefaultMaxAge      = Duration(24 * time.Hour)
	maxFilterValues    = 64
)

// normalize fills defaults and checks the common fields; type-specific
// checks belong to the target's factory.
func normalize(in *Integration) error {
	var errs []string
	in.Name = strings.TrimSpace(in.Name)
	if in.Name == "" || len(in.Name) > 64 || strings.ContainsFunc(in.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		errs = append(errs, "name must be 1 to 64 printable characters")
	}
	if !slices.Contains(Types, in.Type) {
		errs = append(errs, "type must be one of "+strings.Join(Types, ", "))
	}
	if in.Batch.MaxMessages == 0 {
		in.Batch.MaxMessages = DefaultMaxMessages
	}
	if in.Batch.MaxMessages < 1 || in.Batch.MaxMessages > MaxMaxMessages {
		errs = append(errs, fmt.Sprintf("batch.maxMessages must be 1 to %d", MaxMaxMessages))
	}
	if in.Batch.MaxWait == 0 {
		in.Batch.MaxWait = DefaultMaxWait
	}
	if d := time.Duration(in.Batch.MaxWait); d < 10*time.Millisecond || d > time.Minute {
		errs = append(errs, "batch.maxWait must be 10ms to 1m")
	}
	if in.MaxAge == 0 {
		in.MaxAge = DefaultMaxAge
	}
	if d := time.Duration(in.MaxAge); d < time.Second || d > 30*24*time.Hour {
		errs = append(errs, "maxAge must be 1s to 720h")
	}
	f := &in.Filter
	// Each value once (a repeated one would make overlapping consumer
	// filters, which JetStream refuses), in a stable order.
	slices.Sort(f.TsmIDs)
	f.TsmIDs = slices.Compact(f.TsmIDs)
	slices.Sort(f.Devices)
	f.Devices = slices.Compact(f.Devices)
	slices.Sort(f.Gateways)
	f.Gateways = slices.Compact(f.Gateways)
	if len(f.TsmIDs) > maxFilterValues || len(f.Devices) > maxFilterValues || len(f.Gateways) > maxFilterValues {
		errs = append(errs, fmt.Sprintf("a filter list holds at most %d values", maxFilterValues))
	}
	for _, id := range f.TsmIDs {
		if id < 1000 || id > 999999 {
			errs = append(errs, fmt.Sprintf("filter.tsmIds: %d is not a tsmId", id))
			break
		}
	}
	for _, d := range slices.Concat(f.Devices, f.Gateways) {
		if !thingsee.ValidTUID(d) {
			errs = append(errs, fmt.Sprintf("filter: %q is not a 17-character TUID", truncate(d, 32)))
			break
		}
	}
	configs := 0
	for _, set := range []bool{in.Webhook != nil, in.MQTT != nil, in.Azure != nil, in.AWS != nil} {
		if set {
			configs++
		}
	}
	want := map[string]bool{TypeWebhook: in.Webhook != nil, TypeMQTT: in.MQTT != nil, TypeAzure: in.Azure != nil, TypeAWS: in.AWS != nil, TypeWebsocket: configs == 0}
	if in.Type != "" && slices.Contains(Types, in.Type) && (!want[in.Type] || configs > 1) {
		errs = append(errs, fmt.Sprintf("an integration of type %s needs exactly its own settings object", in.Type))
	}
	if len(errs) > 0 {
		return ErrIntegrationInvalid.WithDetail("%s", strings.Join(errs, "; "))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func newID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// validID reports whether id has the integration id form (12 hex digits).
func validID(id string) bool {
	if len(id) != 12 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// record is the stored form: the integration and its sealed secrets.
type record struct {
	Integration
	Sealed []byte `json:"sealedSecrets,omitempty"`
}

// Keys seals integration secrets under the tenant's data key (kms.Keyring).
type Keys interface {
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, error)
}

// KVProvider creates or opens KV buckets (backbone.Backbone).
type KVProvider interface {
	KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error)
}

func secretsAAD(id string) []byte { return []byte("forward/integration-secrets/" + id) }

func (e *Engine) bucket(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
	return e.kvs.KV(ctx, names.IntegrationsBucket(tenant), 1)
}

func (e *Engine) load(ctx context.Context, tenant, id string) (record, uint64, error) {
	if !validID(id) {
		return record{}, 0, ErrIntegrationNotFound.New()
	}
	kv, err := e.bucket(ctx, tenant)
	if err != nil {
		return record{}, 0, err
	}
	ent, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, 0, ErrIntegrationNotFound.New()
	}
	if err != nil {
		return record{}, 0, fmt.Errorf("forward: read integration: %w", err)
	}
	var r record
	if err := json.Unmarshal(ent.Value(), &r); err != nil {
		return record{}, 0, fmt.Errorf("forward: decode integration: %w", err)
	}
	return r, ent.Revision(), nil
}

func (e *Engine) secrets(ctx context.Context, r record) (Secrets, error) {
	var s Secrets
	if len(r.Sealed) == 0 {
		return s, nil
	}
	plain, err := e.keys.Open(ctx, r.Tenant, r.Sealed, secretsAAD(r.ID))
	if err != nil {
		return s, fmt.Errorf("forward: open secrets of %s: %w", r.ID, err)
	}
	if err := json.Unmarshal(plain, &s); err != nil {
		return s, fmt.Errorf("forward: decode secrets of %s: %w", r.ID, err)
	}
	return s, nil
}

func (e *Engine) seal(ctx context.Context, tenant, id string, s Secrets) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return e.keys.Seal(ctx, tenant, b, secretsAAD(id))
}
