// An integration: its types, its settings as the API shows them, its id,
// and the checks of its common fields (the target factories check the rest).

package forward

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Integration types, as the API names them (declared in the client package).
const (
	TypeWebhook   = client.IntegrationWebhook
	TypeMQTT      = client.IntegrationMQTT
	TypeAzure     = client.IntegrationAzure
	TypeAWS       = client.IntegrationAWS
	TypeWebsocket = client.IntegrationWebsocket
)

// Types lists every integration type.
var Types = client.IntegrationTypes

// Faults a client can see.
var (
	ErrIntegrationInvalid  = fault.Define("forward.integration_invalid", fault.InvalidArgument, "the integration is not valid")
	ErrIntegrationNotFound = fault.Define("forward.integration_not_found", fault.NotFound, "no such integration")
	ErrNameTaken           = fault.Define("forward.name_taken", fault.Conflict, "an integration with this name exists")
)

// The API's shapes of an integration are declared once, in the client
// package (the server encodes its answers from them); these aliases keep
// their names here.

// Duration is a time.Duration written as a Go duration string in JSON ("24h").
type Duration = client.Duration

// Filter selects the messages an integration receives; empty lists match all.
type Filter = client.Filter

// Batching bounds a batch by count and by the time its first message waits.
type Batching = client.Batching

// Delivery tunes how an integration's deliveries overlap (lanes).
type Delivery = client.Delivery

// Encryption seals payloads to the customer's public key (HPKE).
type Encryption = client.Encryption

// AuthConfig is outbound authentication of a webhook.
type AuthConfig = client.WebhookAuth

// WebhookConfig is an HTTPS POST target.
type WebhookConfig = client.WebhookConfig

// MQTTConfig is the customer's MQTT broker.
type MQTTConfig = client.MQTTConfig

// AzureConfig is an Azure IoT Hub device identity.
type AzureConfig = client.AzureConfig

// AWSConfig is an AWS IoT Core thing.
type AWSConfig = client.AWSConfig

// Integration is one customer endpoint of a tenant. Secrets are not in it:
// they are kept apart, sealed by kms, and never shown.
type Integration = client.Integration

// Defaults and bounds.
const (
	DefaultMaxMessages = 100
	MaxMaxMessages     = 1000
	DefaultMaxWait     = Duration(time.Second)
	MinMaxWait         = Duration(10 * time.Millisecond)
	MaxMaxWait         = Duration(time.Minute)
	DefaultMaxAge      = Duration(24 * time.Hour)
	MinMaxAge          = Duration(time.Second)
	MaxMaxAge          = Duration(30 * 24 * time.Hour)
	// DefaultConcurrency and MaxConcurrency bound a webhook's lanes
	// (delivery.concurrency); the other types deliver one batch at a time.
	DefaultConcurrency = 4
	MaxConcurrency     = 32
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
	if in.Batch.MaxWait < MinMaxWait || in.Batch.MaxWait > MaxMaxWait {
		errs = append(errs, "batch.maxWait must be 10ms to 1m")
	}
	if in.MaxAge == 0 {
		in.MaxAge = DefaultMaxAge
	}
	if in.MaxAge < MinMaxAge || in.MaxAge > MaxMaxAge {
		errs = append(errs, "maxAge must be 1s to 720h")
	}
	switch c := in.Delivery.Concurrency; {
	case in.Type != TypeWebhook && c > 1:
		errs = append(errs, "delivery.concurrency above 1 is for webhooks only")
	case c < 0 || c > MaxConcurrency:
		errs = append(errs, fmt.Sprintf("delivery.concurrency must be 1 to %d", MaxConcurrency))
	case c == 0:
		in.Delivery.Concurrency = lanesOf(*in)
	}
	if in.Delivery.Linger < 0 || in.Delivery.Linger > in.Batch.MaxWait {
		errs = append(errs, "delivery.linger must be 0 to batch.maxWait")
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

// lanesOf returns how many batches of an integration are delivered at
// once: its delivery.concurrency for a webhook (DefaultConcurrency when
// unset, as in records stored before the setting), 1 for the other
// types, whose targets deliver one batch at a time.
func lanesOf(in Integration) int {
	if in.Type != TypeWebhook {
		return 1
	}
	if in.Delivery.Concurrency == 0 {
		return DefaultConcurrency
	}
	return min(in.Delivery.Concurrency, MaxConcurrency)
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

// ValidID reports whether id has the form of an integration id.
func ValidID(id string) bool { return validID(id) && strings.ToLower(id) == id }
