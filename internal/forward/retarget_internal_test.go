package forward

import "testing"

func TestForgetRetargetedSecrets(t *testing.T) {
	full := Secrets{
		WebhookSecret: "whsec_x", AuthHeaderValue: "hv", OAuthClientSecret: "cs", ClientKeyPEM: "k",
		MQTTPassword: "pw", AzureDeviceKey: "dk", AWSKeyPEM: "ak", WebhookURLQuery: "code=1",
	}
	hook := func(u, token string) Integration {
		return Integration{Webhook: &WebhookConfig{URL: u, Auth: &AuthConfig{TokenURL: token}}}
	}
	tests := []struct {
		name     string
		old, upd Integration
		want     Secrets
	}{
		{"same webhook origin, other path and query", hook("https://a.example/h?code=redacted", "https://idp/t"), hook("https://A.example/other?x=1", "https://idp/t2"), full},
		{"webhook host changed", hook("https://a.example/h", "https://idp/t"), hook("https://evil.example/h", "https://idp/t"),
			Secrets{WebhookSecret: "whsec_x", ClientKeyPEM: "k", MQTTPassword: "pw", AzureDeviceKey: "dk", AWSKeyPEM: "ak"}},
		{"webhook port changed", hook("https://a.example/h", ""), hook("https://a.example:8443/h", ""),
			Secrets{WebhookSecret: "whsec_x", ClientKeyPEM: "k", MQTTPassword: "pw", AzureDeviceKey: "dk", AWSKeyPEM: "ak"}},
		{"token endpoint changed", hook("https://a.example/h", "https://idp/t"), hook("https://a.example/h", "https://evil/t"),
			Secrets{WebhookSecret: "whsec_x", AuthHeaderValue: "hv", ClientKeyPEM: "k", MQTTPassword: "pw", AzureDeviceKey: "dk", AWSKeyPEM: "ak", WebhookURLQuery: "code=1"}},
		{"broker changed", Integration{MQTT: &MQTTConfig{Broker: "mqtts://b:8883"}}, Integration{MQTT: &MQTTConfig{Broker: "mqtts://evil:8883"}},
			Secrets{WebhookSecret: "whsec_x", AuthHeaderValue: "hv", OAuthClientSecret: "cs", ClientKeyPEM: "k", AzureDeviceKey: "dk", AWSKeyPEM: "ak", WebhookURLQuery: "code=1"}},
		{"broker same", Integration{MQTT: &MQTTConfig{Broker: "mqtts://b:8883", Topic: "a"}}, Integration{MQTT: &MQTTConfig{Broker: "mqtts://b:8883", Topic: "b"}}, full},
		{"hub changed", Integration{Azure: &AzureConfig{HostName: "h.azure-devices.net"}}, Integration{Azure: &AzureConfig{HostName: "evil.azure-devices.net"}},
			Secrets{WebhookSecret: "whsec_x", AuthHeaderValue: "hv", OAuthClientSecret: "cs", ClientKeyPEM: "k", MQTTPassword: "pw", AWSKeyPEM: "ak", WebhookURLQuery: "code=1"}},
		{"hub port changed", Integration{Azure: &AzureConfig{HostName: "h"}}, Integration{Azure: &AzureConfig{HostName: "h", Port: 443}},
			Secrets{WebhookSecret: "whsec_x", AuthHeaderValue: "hv", OAuthClientSecret: "cs", ClientKeyPEM: "k", MQTTPassword: "pw", AWSKeyPEM: "ak", WebhookURLQuery: "code=1"}},
		{"aws endpoint changed: its key only signs", Integration{AWS: &AWSConfig{Endpoint: "a"}}, Integration{AWS: &AWSConfig{Endpoint: "b"}}, full},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := full
			s.forgetRetargeted(tc.old, tc.upd)
			if s != tc.want {
				t.Errorf("got  %+v\nwant %+v", s, tc.want)
			}
		})
	}
}
