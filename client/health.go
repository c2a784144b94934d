package client

import (
	"context"
	"net/http"
)

// Health is the answer of the health routes.
type Health struct {
	// Status is "ok" (Healthz) or "ready" (Readyz).
	Status string `json:"status"`
}

// Healthz reports whether the server process answers (GET /healthz).
func (c *Client) Healthz(ctx context.Context) (*Health, error) {
	return call[Health](ctx, c, request{method: http.MethodGet, path: "/healthz"})
}

// Readyz reports whether the node can serve: its backbone and listeners are
// up (GET /readyz). A node that is not ready answers a *Problem with code
// api.unavailable.
func (c *Client) Readyz(ctx context.Context) (*Health, error) {
	return call[Health](ctx, c, request{method: http.MethodGet, path: "/readyz"})
}

// OpenAPI returns the server's OpenAPI 3 document, YAML
// (GET /v1/openapi.yaml).
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	a, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/openapi.yaml"})
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}

// Metrics returns the node's metrics in the Prometheus text format
// (GET /metrics, operator only).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	a, err := c.send(ctx, request{method: http.MethodGet, path: "/metrics", auth: true})
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}
