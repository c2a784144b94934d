package node

import (
	"context"
	"time"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/awsiot"
	"github.com/iotransit/iotransit/internal/forward/azure"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/mqttout"
	"github.com/iotransit/iotransit/internal/forward/seal"
	"github.com/iotransit/iotransit/internal/forward/webhook"
)

// factories maps integration types to their targets: the closed set of
// forwarders (STYLE §2.7), wired here.
func factories() map[string]forward.Factory {
	return map[string]forward.Factory{
		forward.TypeWebhook: factory[webhook.Config]{webhookConfig, func(ctx context.Context, c webhook.Config) (forward.Target, error) { return webhook.New(ctx, c) }},
		forward.TypeMQTT:    factory[mqttout.Config]{mqttConfig, func(ctx context.Context, c mqttout.Config) (forward.Target, error) { return mqttout.New(ctx, c) }},
		forward.TypeAzure:   factory[azure.Config]{azureConfig, func(ctx context.Context, c azure.Config) (forward.Target, error) { return azure.New(ctx, c) }},
		forward.TypeAWS:     factory[awsiot.Config]{awsConfig, func(ctx context.Context, c awsiot.Config) (forward.Target, error) { return awsiot.New(ctx, c) }},
	}
}

// factory adapts a target package to forward.Factory: config maps an
// integration and its secrets to the package's Config, which validates
// itself, and build makes the target.
type factory[C interface{ Validate(context.Context) error }] struct {
	config func(forward.Integration, forward.Secrets, egress.Policy, forward.Sealer) C
	build  func(context.Context, C) (forward.Target, error)
}

// Prepare validates the settings (every problem at once).
func (f factory[C]) Prepare(ctx context.Context, in *forward.Integration, sec *forward.Secrets, pol egress.Policy) error {
	return f.config(*in, *sec, pol, nil).Validate(ctx)
}

// New builds the target.
func (f factory[C]) New(ctx context.Context, in forward.Integration, sec forward.Secrets, pol egress.Policy, sealer forward.Sealer) (forward.Target, error) {
	return f.build(ctx, f.config(in, sec, pol, sealer))
}

// parseKey turns an integration's public key into its HPKE sealer.
func parseKey(pemBytes []byte) (forward.Sealer, string, error) {
	s, err := seal.ParsePublicKey(pemBytes)
	if err != nil {
		return nil, "", err
	}
	return s, s.KeyID(), nil
}

func webhookConfig(in forward.Integration, sec forward.Secrets, pol egress.Policy, sealer forward.Sealer) webhook.Config {
	w := in.Webhook
	if w == nil {
		w = &forward.WebhookConfig{}
	}
	secrets := []webhook.Secret{{Value: sec.WebhookSecret}}
	if sec.WebhookPrevious != "" && time.Now().Before(sec.WebhookPreviousUntil) {
		secrets = append(secrets, webhook.Secret{Value: sec.WebhookPrevious, NotAfter: sec.WebhookPreviousUntil})
	}
	auth := webhook.Auth{Kind: webhook.AuthNone}
	if a := w.Auth; a != nil {
		auth = webhook.Auth{
			Kind: webhook.AuthKind(a.Kind), HeaderName: a.HeaderName, HeaderValue: sec.AuthHeaderValue,
			TokenURL: a.TokenURL, ClientID: a.ClientID, ClientSecret: sec.OAuthClientSecret, Scopes: a.Scopes,
			TokenCAPEM: a.TokenCAPEM,
		}
	}
	return webhook.Config{
		URL: sec.WebhookURL(w.URL), Secrets: secrets, Auth: auth, Sealer: sealer, Policy: pol,
		TLS: egress.TLSOptions{CAPEM: w.CAPEM, CertPEM: w.ClientCertPEM, KeyPEM: sec.ClientKeyPEM},
	}
}

func mqttConfig(in forward.Integration, sec forward.Secrets, pol egress.Policy, sealer forward.Sealer) mqttout.Config {
	m := in.MQTT
	if m == nil {
		m = &forward.MQTTConfig{}
	}
	clientID := m.ClientID
	if clientID == "" { // stable across restarts (brokers and policies key on it)
		clientID = "iotransit-" + in.ID
	}
	c := mqttout.Config{
		Broker: m.Broker, ClientID: clientID, Username: m.Username, Topic: m.Topic, PerMessage: true,
		TLS:    egress.TLSOptions{CAPEM: m.CAPEM, CertPEM: m.ClientCertPEM, KeyPEM: sec.ClientKeyPEM},
		Sealer: sealer, Policy: pol,
	}
	if pw := sec.MQTTPassword; pw != "" {
		c.Password = func() (string, error) { return pw, nil }
	}
	return c
}

func azureConfig(in forward.Integration, sec forward.Secrets, pol egress.Policy, sealer forward.Sealer) azure.Config {
	a := in.Azure
	if a == nil {
		a = &forward.AzureConfig{}
	}
	return azure.Config{
		HostName: a.HostName, DeviceID: a.DeviceID, DeviceKey: sec.AzureDeviceKey, Port: a.Port,
		TLS: egress.TLSOptions{CAPEM: a.CAPEM}, Sealer: sealer, Policy: pol,
	}
}

func awsConfig(in forward.Integration, sec forward.Secrets, pol egress.Policy, sealer forward.Sealer) awsiot.Config {
	a := in.AWS
	if a == nil {
		a = &forward.AWSConfig{}
	}
	return awsiot.Config{
		Endpoint: a.Endpoint, Port: a.Port, ClientID: a.ClientID, CertPEM: a.CertPEM, KeyPEM: sec.AWSKeyPEM,
		CAPEM: a.CAPEM, Topic: a.Topic, Sealer: sealer, Policy: pol,
	}
}
