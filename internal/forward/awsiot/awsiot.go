// Package awsiot delivers a tenant's messages to AWS IoT Core: MQTT 3.1.1
// over mutual TLS with the customer's X.509 thing certificate (port 8883),
// one JSON array per batch, as Thingsee's AWS integrations receive it, on a
// topic built from a template. It is an mqttout target with AWS's
// conventions.
package awsiot

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/mqttout"
)

// DefaultPort is AWS IoT Core's MQTT over TLS port.
const DefaultPort = 8883

// maxSlashes is the most forward slashes AWS IoT Core allows in a topic,
// not counting a Basic Ingest prefix $aws/rules/{rule}/.
const maxSlashes = 7

// Config is an AWS IoT Core integration.
type Config struct {
	// Endpoint is the account's device data endpoint,
	// xxxxxxxxxxxxxx-ats.iot.eu-west-1.amazonaws.com.
	Endpoint string
	// Port is the MQTT port (default 8883).
	Port int
	// ClientID is the MQTT client id, usually the thing name the IoT
	// policy allows to connect (default "iotransit-" and random hex).
	ClientID string
	// CertPEM and KeyPEM are the thing's certificate and private key.
	CertPEM, KeyPEM string
	// CAPEM optionally pins the CA that verifies the endpoint; by default
	// the system roots, which hold the Amazon Root CAs.
	CAPEM string
	// Topic is the topic template (required); see mqttout.Topic for the
	// placeholders. A batch goes to the topic of its first message.
	Topic string
	// Sealer, if set, encrypts every payload to the customer's key.
	Sealer forward.Sealer
	// Policy decides which addresses may be dialled (SSRF guard).
	Policy egress.Policy
}

func (c Config) withDefaults() Config {
	c.Endpoint = strings.TrimSpace(c.Endpoint)
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	return c
}

// check returns the problems of the AWS settings themselves.
func (c Config) check() []error {
	var errs []error
	if !validEndpoint(c.Endpoint) {
		errs = append(errs, egress.ErrTargetInvalid.WithDetail("the AWS IoT endpoint must be a host name (xxxx-ats.iot.region.amazonaws.com), without scheme, port or path"))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, egress.ErrTargetInvalid.WithDetail("the port must be 1-65535"))
	}
	if strings.TrimSpace(c.CertPEM) == "" || strings.TrimSpace(c.KeyPEM) == "" {
		errs = append(errs, egress.ErrTLSInvalid.WithDetail("AWS IoT Core needs the thing's certificate and private key"))
	}
	if c.Topic == "" {
		errs = append(errs, mqttout.ErrTopicInvalid.WithDetail("AWS IoT Core needs a topic"))
	} else if n := slashes(c.Topic); n > maxSlashes {
		errs = append(errs, mqttout.ErrTopicInvalid.WithDetail("the topic has %d forward slashes; AWS IoT Core allows at most %d", n, maxSlashes))
	}
	if len(c.ClientID) > 128 {
		errs = append(errs, mqttout.ErrSettingInvalid.WithDetail("AWS IoT Core allows client ids of at most 128 bytes"))
	}
	return errs
}

// validEndpoint reports whether e looks like a host name or IP address.
func validEndpoint(e string) bool {
	if e == "" || strings.ContainsAny(e, "/@?#[] \t") {
		return false
	}
	if net.ParseIP(e) != nil {
		return true
	}
	return !strings.Contains(e, ":")
}

// slashes counts a topic's forward slashes as AWS IoT Core does, without a
// Basic Ingest prefix. Placeholder values never hold slashes.
func slashes(topic string) int {
	if rest, ok := strings.CutPrefix(topic, "$aws/rules/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			topic = rest[i+1:]
		}
	}
	return strings.Count(topic, "/")
}

// mqtt returns the mqttout configuration of the endpoint.
func (c Config) mqtt() mqttout.Config {
	return mqttout.Config{
		Broker:   "mqtts://" + net.JoinHostPort(c.Endpoint, strconv.Itoa(c.Port)),
		ClientID: c.ClientID,
		TLS:      egress.TLSOptions{CAPEM: c.CAPEM, CertPEM: c.CertPEM, KeyPEM: c.KeyPEM},
		Topic:    c.Topic,
		QoS:      1, // AWS IoT Core supports QoS 0 and 1
		Sealer:   c.Sealer,
		Policy:   c.Policy,
	}
}

// Validate returns every problem of the configuration at once (joined
// fault errors), resolving the endpoint through the egress policy.
func (c Config) Validate(ctx context.Context) error {
	c = c.withDefaults()
	errs := c.check()
	// The topic template and the TLS material, checked as mqttout checks
	// them (on a stand-in broker: the endpoint is checked here).
	probe := c.mqtt()
	probe.Broker, probe.Policy = "mqtts://localhost", egress.Policy{AllowPrivate: true}
	if err := probe.Validate(ctx); err != nil {
		errs = append(errs, err)
	}
	if validEndpoint(c.Endpoint) {
		if err := c.Policy.CheckHost(ctx, c.Endpoint); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Target is an AWS IoT Core thing sending the tenant's batches: an mqttout
// target.
type Target = mqttout.Target

// New returns a target for the endpoint. Like mqttout.New it does not
// resolve or connect; the first Deliver connects.
func New(ctx context.Context, c Config) (*Target, error) {
	c = c.withDefaults()
	if errs := c.check(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return mqttout.New(ctx, c.mqtt())
}
