// Package azure delivers a tenant's messages to an Azure IoT Hub as
// device-to-cloud messages of one device identity: MQTT 3.1.1 over TLS on
// port 8883, authenticated with a SAS token signed by the device's
// symmetric key and renewed at every connect (and proactively before it
// expires), one JSON array per batch on devices/{deviceId}/messages/events/.
// It is an mqttout target with IoT Hub's conventions.
package azure

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/mqttout"
)

// ErrDeviceInvalid is a device identity that cannot work.
var ErrDeviceInvalid = fault.Define("forward.azure_device_invalid", fault.InvalidArgument, "the Azure IoT Hub device identity is not valid")

// Defaults.
const (
	// HostSuffix completes a bare hub name into its host name.
	HostSuffix = ".azure-devices.net"
	// DefaultTokenTTL is how long a SAS token is valid.
	DefaultTokenTTL = time.Hour
	// DefaultPort is IoT Hub's MQTT over TLS port.
	DefaultPort = 8883
	// APIVersion is the IoT Hub API version announced in the user name.
	APIVersion = "2021-04-12"
)

// Config is an Azure IoT Hub integration: one device identity whose
// device-to-cloud messages carry the tenant's batches.
type Config struct {
	// HostName is the hub's host name, myhub.azure-devices.net; a bare hub
	// name ("myhub") gets the .azure-devices.net suffix, and a name ending
	// in a dot is taken as it is ("localhost.").
	HostName string
	// DeviceID is the device identity registered in the hub.
	DeviceID string
	// DeviceKey is the device's symmetric key (base64), primary or
	// secondary. It signs SAS tokens and is never sent.
	DeviceKey string
	// TokenTTL is how long each SAS token is valid (default 1h); the
	// target reconnects with a fresh one after 80% of it.
	TokenTTL time.Duration
	// TLS optionally pins the CA that verifies the hub (tests); by default
	// the system roots (which hold IoT Hub's DigiCert and Microsoft roots).
	TLS egress.TLSOptions
	// Port is the MQTT port (default 8883; tests override it).
	Port int
	// Sealer, if set, encrypts every payload to the customer's key.
	Sealer forward.Sealer
	// Policy decides which addresses may be dialled (SSRF guard).
	Policy egress.Policy
	// Now is the clock for token expiry (default time.Now).
	Now func() time.Time
}

// Username is the MQTT user name IoT Hub expects of a device.
func Username(hostName, deviceID string) string {
	return hostName + "/" + deviceID + "/?api-version=" + APIVersion
}

// D2CTopic is the topic of a device's device-to-cloud messages.
func D2CTopic(deviceID string) string {
	return "devices/" + deviceID + "/messages/events/"
}

// SASToken returns a device-scoped shared access signature valid until
// expiry, per IoT Hub's documented algorithm: the resource URI
// {hostName}/devices/{deviceId}, URL-encoded, a newline and the expiry in
// Unix seconds are signed with HMAC-SHA256 under the base64-decoded key.
// A device key needs no key name (skn).
func SASToken(hostName, deviceID, key string, expiry time.Time) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(k) == 0 {
		return "", ErrDeviceInvalid.WithDetail("the device key is not base64")
	}
	sr := url.QueryEscape(hostName + "/devices/" + deviceID)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se, nil
}

// HostName is the host a Config's HostName h connects to: h in lower
// case, a bare hub name completed with HostSuffix. A trailing dot marks a
// name to take as it is (DNS's fully qualified form), e.g. "localhost." in
// tests. The API checks a tenant's allowed hosts against it.
func HostName(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if full, ok := strings.CutSuffix(h, "."); ok {
		return full
	}
	if h != "" && !strings.Contains(h, ".") && !strings.Contains(h, ":") {
		h += HostSuffix
	}
	return h
}

// validDeviceID reports whether id is a device id IoT Hub accepts (up to
// 128 characters: ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ ')
// and that is usable in an MQTT topic (IoT Hub also allows + and #, which
// are MQTT wildcards).
func validDeviceID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-.%_*?!(),:=@$'", r):
		default:
			return false
		}
	}
	return true
}

func (c Config) withDefaults() Config {
	c.HostName = HostName(c.HostName)
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// check returns the problems of the Azure settings themselves.
func (c Config) check() []error {
	var errs []error
	if c.HostName == "" {
		errs = append(errs, egress.ErrTargetInvalid.WithDetail("the IoT Hub host name is empty"))
	}
	if !validDeviceID(c.DeviceID) {
		errs = append(errs, ErrDeviceInvalid.WithDetail("the device id must be 1-128 ASCII letters, digits or - . %% _ * ? ! ( ) , : = @ $ '"))
	}
	if k, err := base64.StdEncoding.DecodeString(c.DeviceKey); err != nil || len(k) == 0 {
		errs = append(errs, ErrDeviceInvalid.WithDetail("the device key must be the base64 symmetric key shown for the device"))
	}
	if c.TokenTTL < time.Second {
		errs = append(errs, ErrDeviceInvalid.WithDetail("the token lifetime must be at least 1s"))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, egress.ErrTargetInvalid.WithDetail("the port must be 1-65535"))
	}
	return errs
}

// mqtt returns the mqttout configuration of the hub.
func (c Config) mqtt() mqttout.Config {
	return mqttout.Config{
		Broker:   "mqtts://" + net.JoinHostPort(c.HostName, strconv.Itoa(c.Port)),
		ClientID: c.DeviceID,
		Username: Username(c.HostName, c.DeviceID),
		Password: func() (string, error) {
			return SASToken(c.HostName, c.DeviceID, c.DeviceKey, c.Now().Add(c.TokenTTL))
		},
		TLS:       c.TLS,
		Topic:     D2CTopic(c.DeviceID),
		QoS:       1,
		Sealer:    c.Sealer,
		Policy:    c.Policy,
		Reconnect: c.TokenTTL * 4 / 5,
	}
}

// Validate returns every problem of the configuration at once (joined
// fault errors), resolving the hub's host name through the egress policy.
func (c Config) Validate(ctx context.Context) error {
	c = c.withDefaults()
	errs := c.check()
	if _, err := egress.TLSConfig(c.TLS); err != nil {
		errs = append(errs, err)
	}
	if c.HostName != "" {
		if err := c.Policy.CheckHost(ctx, c.HostName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Target is an IoT Hub device sending the tenant's batches: an mqttout
// target.
type Target = mqttout.Target

// New returns a target for the hub. Like mqttout.New it does not resolve or
// connect; the first Deliver connects.
func New(ctx context.Context, c Config) (*Target, error) {
	c = c.withDefaults()
	if errs := c.check(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return mqttout.New(ctx, c.mqtt())
}
