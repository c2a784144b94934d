package mqttout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
)

// Faults a client can see (besides egress's for the address and TLS).
var (
	ErrTopicInvalid   = fault.Define("forward.mqtt_topic_invalid", fault.InvalidArgument, "the MQTT topic template is not valid")
	ErrSettingInvalid = fault.Define("forward.mqtt_setting_invalid", fault.InvalidArgument, "an MQTT integration setting is not valid")
)

// Defaults.
const (
	DefaultPort           = 8883
	DefaultConnectTimeout = 10 * time.Second
	DefaultPublishTimeout = 10 * time.Second
)

// Config is an MQTT integration: the customer's broker and how messages are
// published to it.
type Config struct {
	// Broker is "mqtts://host[:port]" (port 8883 by default). Plaintext
	// "mqtt://" is refused: messages and credentials travel over TLS only.
	Broker string
	// ClientID is the MQTT client identifier (default "iotransit-" and 12
	// random hex digits, 22 characters, within the 23 every broker accepts
	// [MQTT-3.1.3-5]). It stays the same across reconnects.
	ClientID string
	// Username is the MQTT user name ("" for none).
	Username string
	// Password returns the MQTT password; nil for none. It is called at
	// every connect, so it can renew a token (Azure IoT Hub SAS). Its value
	// never appears in errors or logs.
	Password func() (string, error)
	// TLS pins the CA that verifies the broker and holds a client
	// certificate for mutual TLS.
	TLS egress.TLSOptions
	// Topic is the topic template (default DefaultTopic); see Topic for the
	// placeholders. Wildcards (+ #) are refused.
	Topic string
	// PerMessage publishes one MQTT message per Thingsee object, each on
	// its own topic; otherwise one MQTT message per batch holds the JSON
	// array, on the topic of the batch's first message.
	PerMessage bool
	// QoS is 1 (at least once: each publish waits for its PUBACK). The zero
	// value means 1; QoS 0 is not offered, since a Target reports a batch
	// delivered only when the broker has acknowledged it.
	QoS byte
	// Sealer, if set, encrypts every payload to the customer's key.
	Sealer forward.Sealer
	// Policy decides which addresses may be dialled (SSRF guard).
	Policy egress.Policy
	// Reconnect, when positive, makes a delivery reconnect (with a fresh
	// Password) when the connection is older than this, e.g. before an
	// Azure SAS token expires. 0: keep a connection as long as it lives.
	Reconnect time.Duration
	// ConnectTimeout bounds the TCP, TLS and MQTT handshakes (default 10s).
	ConnectTimeout time.Duration
	// PublishTimeout bounds the wait for each PUBACK (default 10s).
	PublishTimeout time.Duration
}

// broker is a parsed Broker URL.
type broker struct {
	host string
	port int
}

func (b broker) addr() string { return net.JoinHostPort(b.host, strconv.Itoa(b.port)) }

// parseBroker checks the broker URL.
func parseBroker(s string) (broker, error) {
	if s == "" {
		return broker{}, egress.ErrTargetInvalid.WithDetail("the broker URL is empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		return broker{}, egress.ErrTargetInvalid.WithDetail("the broker URL does not parse: use mqtts://host[:port]")
	}
	switch u.Scheme {
	case "mqtts":
	case "mqtt", "tcp", "ws":
		return broker{}, egress.ErrTargetInvalid.WithDetail("plaintext %s:// is refused: use mqtts://host[:port]", u.Scheme)
	default:
		return broker{}, egress.ErrTargetInvalid.WithDetail("the broker URL must be mqtts://host[:port]")
	}
	if u.User != nil {
		// Never keep a secret in a URL, which is shown and logged.
		return broker{}, egress.ErrTargetInvalid.WithDetail("the broker URL must not hold credentials: set the user name and password separately")
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return broker{}, egress.ErrTargetInvalid.WithDetail("the broker URL must be mqtts://host[:port], with no path or query")
	}
	b := broker{host: u.Hostname(), port: DefaultPort}
	if b.host == "" {
		return broker{}, egress.ErrTargetInvalid.WithDetail("the broker URL has no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return broker{}, egress.ErrTargetInvalid.WithDetail("the broker port must be 1-65535")
		}
		b.port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return broker{}, egress.ErrTargetInvalid.WithDetail("the broker port must be 1-65535")
	}
	return b, nil
}

// withDefaults fills in the defaults.
func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.QoS == 0 {
		c.QoS = 1
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.ClientID == "" {
		c.ClientID = randomClientID()
	}
	return c
}

func randomClientID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return "iotransit-" + hex.EncodeToString(b)
}

// check returns every problem found without resolving the host.
func (c Config) check() (broker, template, []error) {
	c = c.withDefaults()
	var errs []error
	b, err := parseBroker(c.Broker)
	if err != nil {
		errs = append(errs, err)
	}
	t, terrs := parseTemplate(c.Topic)
	errs = append(errs, terrs...)
	if c.QoS > 1 {
		errs = append(errs, ErrSettingInvalid.WithDetail("QoS must be 1 (at least once)"))
	}
	if c.ConnectTimeout < 0 || c.PublishTimeout < 0 || c.Reconnect < 0 {
		errs = append(errs, ErrSettingInvalid.WithDetail("timeouts and the reconnect interval must not be negative"))
	}
	if !validString(c.ClientID) {
		errs = append(errs, ErrSettingInvalid.WithDetail("the client id must be valid UTF-8 without NUL, at most 65535 bytes"))
	}
	if !validString(c.Username) {
		errs = append(errs, ErrSettingInvalid.WithDetail("the user name must be valid UTF-8 without NUL, at most 65535 bytes"))
	}
	if c.Password != nil && c.Username == "" {
		// MQTT 3.1.1 sends a password only with a user name [MQTT-3.1.2-22].
		errs = append(errs, ErrSettingInvalid.WithDetail("a password needs a user name"))
	}
	if _, err := egress.TLSConfig(c.TLS); err != nil {
		errs = append(errs, err)
	}
	return b, t, errs
}

// validString reports whether s can be an MQTT UTF-8 string [MQTT-1.5.3].
func validString(s string) bool {
	return len(s) <= 65535 && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// Validate returns every problem of the configuration at once (joined
// fault errors): the broker URL (mqtts only, host, port), whether the host
// may be reached (egress policy, resolving it), the topic template (known
// placeholders, no wildcards), the settings and the TLS material.
func (c Config) Validate(ctx context.Context) error {
	b, _, errs := c.check()
	if b.host != "" {
		if err := c.Policy.CheckHost(ctx, b.host); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
