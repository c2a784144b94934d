// Package forward delivers each tenant's stored messages to the endpoints
// the tenant configured (integrations): a durable JetStream consumer per
// integration, batches by count and time, order kept per device (one batch
// in flight per integration), exponential backoff with jitter that honours
// Retry-After, a dead-letter stream per integration for messages older than
// the integration's max age, and re-drive. Targets (webhook, MQTT, Azure IoT
// Hub, AWS IoT Core) live in subpackages behind the small Target interface;
// cmd/ passes the factories in.
package forward
