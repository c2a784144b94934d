// An integration's secrets: kept apart from its settings, sealed by kms in
// its record, never shown; what an update keeps, takes and forgets.

package forward

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

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

// GenerateWebhookSecret makes a Standard Webhooks secret: whsec_ and the
// base64 of 32 random bytes.
func GenerateWebhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

// secretsAAD binds sealed secrets to their integration.
func secretsAAD(id string) []byte { return []byte("forward/integration-secrets/" + id) }

// secrets opens a record's sealed secrets.
func (s records) secrets(ctx context.Context, r record) (Secrets, error) {
	var sec Secrets
	if len(r.Sealed) == 0 {
		return sec, nil
	}
	plain, err := s.keys.Open(ctx, r.Tenant, r.Sealed, secretsAAD(r.ID))
	if err != nil {
		return sec, fmt.Errorf("forward: open secrets of %s: %w", r.ID, err)
	}
	if err := json.Unmarshal(plain, &sec); err != nil {
		return sec, fmt.Errorf("forward: decode secrets of %s: %w", r.ID, err)
	}
	return sec, nil
}

// seal seals an integration's secrets for its record (the registry writes
// records; records opens them).
func (reg *Registry) seal(ctx context.Context, tenant, id string, s Secrets) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return reg.keys.Seal(ctx, tenant, b, secretsAAD(id))
}
